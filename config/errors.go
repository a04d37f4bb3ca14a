package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// lineError is one problem of the file: "file:line: key.path: message".
type lineError struct {
	line int
	path string
	msg  string
	// decode marks a value that did not decode.
	decode bool
}

func (e *lineError) Error() string { return e.msg }

// report keeps a problem; nil is none.
func (d *decoder) report(err error) {
	if err == nil {
		return
	}
	e, ok := errors.AsType[*lineError](err)
	if !ok {
		e = &lineError{line: 1, msg: err.Error()}
	}
	d.errs = append(d.errs, e)
}

// result is every reported problem in the order of the file, one a line.
// It leaves out what validation says of a value that did not decode (it is
// zero, so validation would report it again) and of the list holding it
// (yaml.v3 drops a list item that does not decode, so the items after it
// move up and the list looks shorter).
func (d *decoder) result() error {
	var failed []string
	for _, e := range d.errs {
		if e.decode {
			scope, _, _ := strings.Cut(e.path, "[")
			failed = append(failed, scope)
		}
	}
	var kept []*lineError
	for _, e := range d.errs {
		if !e.decode && slices.ContainsFunc(failed, func(scope string) bool { return under(e.path, scope) || under(scope, e.path) }) {
			continue
		}
		kept = append(kept, e)
	}
	slices.SortStableFunc(kept, func(a, b *lineError) int { return a.line - b.line })
	out := make([]error, len(kept))
	for i, e := range kept {
		out[i] = e
	}
	return errors.Join(out...)
}

// under reports whether key path is parent or one of its keys or items.
func under(path, parent string) bool {
	if parent == "" || path == parent {
		return true
	}
	rest, ok := strings.CutPrefix(path, parent)
	return ok && (rest[0] == '.' || rest[0] == '[')
}

// decodeError places a nodeError in the file.
func (d *decoder) decodeError(e *nodeError) error {
	path := join(d.paths[e.at], e.key)
	err := d.errorAt(e.line, path, "%s", e.msg)
	err.decode = true
	return err
}

// line returns the line of the key at path, or of its closest present
// parent when the key is missing.
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		if path == "" {
			return 1
		}
		path = path[:max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['), 0)]
	}
}

// errorf reports a problem with the key at path, on that key's line.
func (d *decoder) errorf(path, format string, args ...any) error {
	return d.errorAt(d.line(path), path, format, args...)
}

// errorAt reports a problem with the key at path on the given line.
func (d *decoder) errorAt(line int, path, format string, args ...any) *lineError {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return &lineError{line: line, path: path, msg: fmt.Sprintf("%s:%d: %s", d.file, line, msg)}
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError rewrites yaml.v3's syntax errors, "yaml: line N: msg", into
// "file:N: msg". yaml.v3 leaves "line N" out when its 0-based mark is 0,
// so a message without one is about line 1.
func (d *decoder) yamlError(msg string) error {
	if sm := yamlLine.FindStringSubmatch(msg); sm != nil {
		line, _ := strconv.Atoi(sm[1])
		return &lineError{line: line, msg: fmt.Sprintf("%s:%s: %s", d.file, sm[1], sm[2]), decode: true}
	}
	return &lineError{line: 1, msg: fmt.Sprintf("%s:1: %s", d.file, strings.TrimPrefix(msg, "yaml: ")), decode: true}
}
