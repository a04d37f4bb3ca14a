package config

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Environment variables expand inside scalar values, after parsing, rather
// than in the text: a value holding '#', ': ' or quotes then cannot rewrite
// the YAML around it. To parse at all, each reference is first swapped for a
// placeholder that is plain YAML wherever a value may stand (a bare ${VAR}
// ends a flow mapping at its '}'), so `{ secret: ${SECRET} }` works and line
// numbers stay those of the file.
//
// A placeholder is refOpen, the reference's index, refClose: private-use
// characters, which YAML reads as plain text.
const refOpen, refClose = '\uE000', '\uE001'

var refPattern = regexp.MustCompile("\uE000([0-9]+)\uE001")

// refs holds the names of one file's $ references, by placeholder index.
type refs []string

// protect swaps every reference os.Expand recognises ($VAR, ${VAR},
// ${VAR:-default}, $$) for a placeholder. The text must not hold refOpen.
func protect(text string) (string, refs) {
	var r refs
	text = os.Expand(text, func(name string) string {
		r = append(r, name)
		return fmt.Sprintf("%c%d%c", refOpen, len(r)-1, refClose)
	})
	return text, r
}

// expand replaces the placeholders in every scalar value with the
// environment's value: $VAR and ${VAR} give the variable, "" when unset;
// ${VAR:-default} gives the default when the variable is unset or empty;
// "$$" gives "$". Keys keep the text as written. Aliases share their
// anchor's node, so nothing expands twice. named gets the names each
// expanded value refers to, for errors about an empty one.
func (r refs) expand(n *yaml.Node, named map[*yaml.Node][]string) {
	switch n.Kind {
	case yaml.ScalarNode:
		v := refPattern.ReplaceAllStringFunc(n.Value, func(m string) string {
			named[n] = append(named[n], r[r.index(m)])
			return getenv(r[r.index(m)])
		})
		if v == n.Value {
			return
		}
		n.Value = v
		// A plain scalar's tag was resolved from the placeholder (a
		// string); clearing it lets the decoder resolve the expanded value,
		// so "poll_interval: ${INTERVAL}" is a duration and
		// "secret: ${UNSET}" is null.
		if n.Style&(yaml.TaggedStyle|yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = ""
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			n.Content[i].Value = r.restore(n.Content[i].Value)
			r.expand(n.Content[i+1], named)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			r.expand(c, named)
		}
	}
}

func (r refs) index(placeholder string) int {
	i, _ := strconv.Atoi(refPattern.FindStringSubmatch(placeholder)[1])
	return i
}

// restore puts the references back as written, for keys and error messages.
func (r refs) restore(s string) string {
	return refPattern.ReplaceAllStringFunc(s, func(m string) string {
		if name := r[r.index(m)]; name != "$" {
			return "${" + name + "}"
		}
		return "$$"
	})
}

func getenv(name string) string {
	if name == "$" {
		return "$"
	}
	if v, def, ok := strings.Cut(name, ":-"); ok {
		if s := os.Getenv(v); s != "" {
			return s
		}
		return def
	}
	return os.Getenv(name)
}
