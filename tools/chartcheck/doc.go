// Package chartcheck holds the checks of the deployment files that need the
// Kubernetes and prometheus-operator API types, or tool binaries built by
// `make tools` (helm, goreleaser). It is a module of its own so that those
// large dependency trees never enter the exporter's go.mod.
package chartcheck
