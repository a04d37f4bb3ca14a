// Package docs holds the project's documentation (the Markdown files of
// this directory) and the tests that keep it true to the code: the metrics
// reference lists exactly the metrics the exporter registers, and every
// relative link points at a file of the repository.
package docs
