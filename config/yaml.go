package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Strictness comes from yaml.v3 itself: the Decoder runs with
// KnownFields(true), and every config struct's UnmarshalYAML takes the
// unmarshal func (blackbox_exporter's style), which decodes on that same
// Decoder. (yaml.v3's *yaml.Node unmarshalers decode on a fresh decoder
// that forgets KnownFields.) What is left here is to say where a problem
// is: yaml.v3 reports "line N: ..." with Go type names and some of the
// value, so each struct's unmarshaler rewrites the errors about its own
// keys into a nodeError, which parse turns into "file:line: key.path:
// message" without the value.

// decoder turns one file into a Config. It keeps the line of every key it
// saw, by key path ("pipelines[0].verify.url"), so that validation errors
// point at the line to fix.
type decoder struct {
	file  string
	dir   string
	lines map[string]int
	// paths names the mappings and lists of the file by their position.
	paths map[position]string
	// vars holds the environment variables a value refers to, by the key
	// path of the value, and named by node until the paths are known.
	vars  map[string][]string
	named map[*yaml.Node][]string
	// errs is every problem found so far (report).
	errs []*lineError
}

// position identifies a node of the file.
type position struct {
	line, column int
	kind         yaml.Kind
}

func positionOf(n *yaml.Node) position { return position{n.Line, n.Column, n.Kind} }

// nodeOf is how an unmarshaler of the unmarshal-func kind gets hold of its
// node: yaml.v3 hands a *yaml.Node unmarshaler the tree's own node.
type nodeOf struct{ n *yaml.Node }

func (c *nodeOf) UnmarshalYAML(n *yaml.Node) error {
	c.n = n
	return nil
}

// parse expands environment variables (see expand.go), decodes strictly,
// reads the *_file secrets and validates the result.
func (d *decoder) parse(data []byte) (*Config, error) {
	if i := bytes.IndexRune(data, refOpen); i >= 0 {
		return nil, d.errorAt(1+bytes.Count(data[:i], []byte("\n")), "", "the character U+E000 is reserved for ${VAR} expansion")
	}
	text, refs := protect(string(data))
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	doc := &document{d: d, refs: refs, cfg: &Config{Webhooks: DefaultWebhooks}}
	d.lines[""] = 1
	if err := dec.Decode(doc); err != nil && !errors.Is(err, io.EOF) {
		te, ok := errors.AsType[*yaml.TypeError](err)
		if !ok {
			return nil, d.yamlError(refs.restore(err.Error()))
		}
		// Every key that did not decode, each once; the rest decoded.
		for _, msg := range te.Errors {
			if e, ok := decodeNodeError(msg); ok {
				d.report(d.decodeError(e))
			} else {
				d.report(d.yamlError(refs.restore(goTypes.ReplaceAllString(msg, ""))))
			}
		}
	}
	// yaml.v3 would silently ignore what follows a "---".
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, d.errorAt(next.Line, "", "a second YAML document is not allowed")
	} else if !errors.Is(err, io.EOF) {
		return nil, d.yamlError(refs.restore(err.Error()))
	}
	cfg := doc.cfg
	d.loadSecrets(cfg)
	d.validate(cfg)
	if len(d.errs) > 0 {
		return nil, d.result()
	}
	return cfg, nil
}

// goTypes is how yaml.v3 names the Go type a key was not found in, which
// means nothing to whoever wrote the file.
var goTypes = regexp.MustCompile(` in type \S+$`)

// document is the file's root. Its unmarshaler sees the parsed tree before
// the Config is decoded from it, to expand environment variables in place
// and to index the key paths.
type document struct {
	d    *decoder
	refs refs
	cfg  *Config
}

// UnmarshalYAML expands and indexes the tree in place, then decodes the
// Config from it on the same strict Decoder.
func (doc *document) UnmarshalYAML(unmarshal func(any) error) error {
	var root nodeOf
	if err := unmarshal(&root); err != nil {
		return err
	}
	doc.d.named = map[*yaml.Node][]string{}
	doc.refs.expand(root.n, doc.d.named)
	doc.d.index(root.n, "")
	return unmarshal(doc.cfg)
}

// index records the line of every key and the path of every mapping and
// list. Keys merged in with "<<" are recorded under the mapping they merge
// into; their values were indexed where their anchor is, and aliases are
// not followed, so an alias bomb costs no more than its text.
func (d *decoder) index(n *yaml.Node, path string) {
	d.paths[positionOf(n)] = path
	switch n.Kind {
	case yaml.MappingNode:
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				merges = append(merges, v)
				continue
			}
			key := join(path, k.Value)
			if _, ok := d.lines[key]; !ok {
				d.lines[key] = k.Line
			}
			if names := d.named[v]; len(names) > 0 {
				d.vars[key] = names
			}
			d.index(v, key)
		}
		for _, m := range merges {
			for _, k := range mergedKeys(m) {
				if key := join(path, k.Value); d.lines[key] == 0 {
					d.lines[key] = k.Line
				}
			}
			if m.Kind != yaml.AliasNode {
				d.index(m, path)
			}
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.index(item, p)
		}
	}
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.Tag != "!!str"
}

// mergedKeys returns the keys a "<<" value brings in: those of a mapping,
// of an alias to one, or of a list of them; not those they merge in turn.
func mergedKeys(m *yaml.Node) []*yaml.Node {
	if m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	var keys []*yaml.Node
	switch m.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(m.Content); i += 2 {
			keys = append(keys, m.Content[i])
		}
	case yaml.SequenceNode:
		for _, item := range m.Content {
			if item.Kind != yaml.SequenceNode {
				keys = append(keys, mergedKeys(item)...)
			}
		}
	}
	return keys
}

// pairs returns the key and value nodes of mapping n, its own first and
// then those merged in, in the order yaml.v3 decodes them. Each merged
// mapping counts once, so that an alias bomb costs no more than its text.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	return mergedPairs(n, map[*yaml.Node]bool{})
}

func mergedPairs(n *yaml.Node, seen map[*yaml.Node]bool) [][2]*yaml.Node {
	var own, merged [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !isMerge(k) {
			own = append(own, [2]*yaml.Node{k, v})
			continue
		}
		ms := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			ms = v.Content
		}
		for _, m := range ms {
			if m.Kind == yaml.AliasNode {
				m = m.Alias
			}
			if m.Kind == yaml.MappingNode && !seen[m] {
				seen[m] = true
				merged = append(merged, mergedPairs(m, seen)...)
			}
		}
	}
	return append(own, merged...)
}

// nodeError is a problem with a key of the mapping at position at (or with
// the mapping itself when key is empty). msg never holds a value.
type nodeError struct {
	at   position
	key  string
	line int
	msg  string
}

func (e *nodeError) Error() string { return e.msg }

// A nodeError travels to parse inside a *yaml.TypeError, whose Errors are
// strings: yaml.v3 decodes on past a TypeError (the other keys, the other
// pipelines) and stops at any other error, so that every key that does not
// decode is reported, not only the first. encode writes the fields apart
// with NULs, which neither a key nor a message holds (the file may not:
// YAML does not allow the character unescaped).
func (e *nodeError) encode() string {
	return fmt.Sprintf("\x00%d\x00%d\x00%d\x00%d\x00%s\x00%s", e.at.line, e.at.column, e.at.kind, e.line, e.key, e.msg)
}

func decodeNodeError(s string) (*nodeError, bool) {
	f := strings.SplitN(s, "\x00", 7)
	if len(f) != 7 || f[0] != "" {
		return nil, false
	}
	var n [4]int
	for i := range n {
		v, err := strconv.Atoi(f[i+1])
		if err != nil {
			return nil, false
		}
		n[i] = v
	}
	return &nodeError{at: position{n[0], n[1], yaml.Kind(n[2])}, line: n[3], key: f[5], msg: f[6]}, true
}

// asTypeError hands nodeErrors to yaml.v3 as a TypeError (see encode).
func asTypeError(es ...*nodeError) error {
	te := &yaml.TypeError{}
	for _, e := range es {
		te.Errors = append(te.Errors, e.encode())
	}
	return te
}

// decodeStruct is the body of every config struct's UnmarshalYAML: it
// decodes the node into v, a pointer to the struct's plain twin (a type
// without the method), and turns the errors about the node's own keys into
// a nodeError. Errors of nested structs arrive as nodeErrors already.
func decodeStruct(unmarshal func(any) error, v any) error {
	var node nodeOf
	if err := unmarshal(&node); err != nil {
		return err
	}
	n := node.n
	err := unmarshal(v)
	if err == nil {
		return nil
	}
	t := reflect.TypeOf(v).Elem()
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		// This mapping's own problems, and those of the mappings in it,
		// already placed (decodeNodeError).
		out := &yaml.TypeError{}
		for _, msg := range te.Errors {
			if _, ok := decodeNodeError(msg); !ok {
				msg = typeError(n, t, msg).encode()
			}
			out.Errors = append(out.Errors, msg)
		}
		return out
	}
	if e := valueError(n, t); e != nil {
		return asTypeError(e)
	}
	// yaml.v3's own failures (excessive aliasing, an unknown anchor) name
	// no value.
	return err
}

var (
	unknownKey = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	duplicate  = regexp.MustCompile(`^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	wrongKind  = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `.*`)? into \\S+$")
)

// typeError rewrites one of yaml.v3's type errors about mapping n, decoded
// into struct type t.
func typeError(n *yaml.Node, t reflect.Type, msg string) *nodeError {
	at := positionOf(n)
	if m := unknownKey.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		text := "unknown key"
		if s := closest(m[2], keysOf(t)); s != "" {
			text += " (did you mean " + s + "?)"
		}
		return &nodeError{at: at, key: m[2], line: line, msg: text}
	}
	if m := duplicate.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, _ := strconv.Unquote(m[2])
		return &nodeError{at: at, key: key, line: line, msg: "already set at line " + m[3]}
	}
	if m := wrongKind.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		tag := m[2]
		if n.Line == line && n.ShortTag() == tag {
			return &nodeError{at: at, line: line, msg: "expected a mapping, got " + tagWord(tag)}
		}
		for _, p := range pairs(n) {
			k, v := p[0], p[1]
			f, ok := field(t, k.Value)
			if !ok {
				continue
			}
			if v.Kind == yaml.AliasNode {
				v = v.Alias
			}
			// A flow mapping holds several values on one line: the one
			// meant is the one whose field cannot take its kind.
			if v.Line == line && v.ShortTag() == tag && !accepts(f, tag) {
				return &nodeError{at: at, key: k.Value, line: line, msg: "expected " + describe(f) + ", got " + tagWord(tag)}
			}
			for i, item := range v.Content {
				if v.Kind == yaml.SequenceNode && item.Line == line && item.ShortTag() == tag && !accepts(f.Elem(), tag) {
					return &nodeError{at: at, key: fmt.Sprintf("%s[%d]", k.Value, i), line: line, msg: "expected " + describe(f.Elem()) + ", got " + tagWord(tag)}
				}
			}
		}
	}
	// Not one of the errors above: keep yaml.v3's words up to any value.
	line, rest, _ := strings.Cut(strings.TrimPrefix(msg, "line "), ": ")
	l, _ := strconv.Atoi(line)
	rest, _, _ = strings.Cut(rest, " `")
	return &nodeError{at: at, line: l, msg: rest}
}

var (
	durationType = reflect.TypeFor[model.Duration]()
	regexpType   = reflect.TypeFor[*Regexp]()
)

// valueError places the error of a custom unmarshaler (model.Duration's or
// Regexp's), which names no line: decoding stops at the first value that
// fails, so it is the first one of those types that does not parse. It
// returns nil when no such value fails.
func valueError(n *yaml.Node, t reflect.Type) *nodeError {
	for _, p := range pairs(n) {
		k, v := p[0], p[1]
		f, _ := field(t, k.Value)
		switch f {
		case durationType:
			if _, err := model.ParseDuration(v.Value); err != nil {
				return &nodeError{at: positionOf(n), key: k.Value, line: v.Line, msg: "must be a duration such as 90s, 15m, 6h or 2d"}
			}
		case regexpType:
			if _, err := regexp.Compile(v.Value); err != nil {
				msg := "is not a regular expression"
				if se, ok := errors.AsType[*syntax.Error](err); ok {
					msg += ": " + se.Code.String()
				}
				return &nodeError{at: positionOf(n), key: k.Value, line: v.Line, msg: msg}
			}
		}
	}
	return nil
}

// accepts reports whether yaml.v3 decodes a node tagged tag into type t.
func accepts(t reflect.Type, tag string) bool {
	switch describe(t) {
	case "a mapping":
		return tag == "!!map"
	case "a list":
		return tag == "!!seq"
	case "an integer":
		return tag == "!!int"
	case "true or false":
		return tag == "!!bool"
	}
	return tag != "!!map" && tag != "!!seq"
}

// tagWord names what a YAML tag is written as: a config's author writes
// a list, not a !!seq.
func tagWord(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "true or false"
	case "!!null":
		return "nothing"
	}
	return tag
}

// keysOf returns the YAML keys of struct type t.
func keysOf(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); f.IsExported() && name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// field returns the type of the field of struct type t with YAML key key.
func field(t reflect.Type, key string) (reflect.Type, bool) {
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f.Type, true
		}
	}
	return nil, false
}

// describe names what a value of type t is written as.
func describe(t reflect.Type) string {
	switch t {
	case durationType:
		return "a duration"
	case regexpType:
		return "a regular expression"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "a mapping"
	}
	return "a string"
}

// closest returns the key a mistyped one most likely meant: within two
// edits, and fewer than half its length, or "" when none is that close.
func closest(key string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		if d := editDistance(key, k); d < bestD && 2*d < len(key) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, key string) string {
	if path == "" || key == "" {
		return path + key
	}
	return path + "." + key
}
