package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxSecretFileBytes bounds a *_file read, so that pointing one at a device
// or a large file fails instead of hanging or filling memory.
const maxSecretFileBytes = 64 << 10

// maxNodes bounds the nodes check visits. Aliases and merge keys revisit
// their anchor, so a small file can expand exponentially (a "billion laughs");
// a real config has a few hundred nodes.
const maxNodes = 100000

// decoder turns one file into a Config. It keeps the line of every key it
// saw, by key path ("pipelines[0].verify.url"), so that validation errors
// point at the line to fix.
type decoder struct {
	file  string
	dir   string
	lines map[string]int
	nodes int
}

// parse expands environment variables (see expand.go), then walks the node
// tree with check before decoding: yaml.v3's Node.Decode does not honour
// Decoder.KnownFields, so check enforces the same strictness (unknown and
// duplicate keys, wrong kinds, bad durations and patterns) and reports each
// problem with its line and key path.
func (d *decoder) parse(data []byte) (*Config, error) {
	if i := bytes.IndexRune(data, refOpen); i >= 0 {
		return nil, d.errorAt(1+bytes.Count(data[:i], []byte("\n")), "", "the character U+E000 is reserved for ${VAR} expansion")
	}
	text, refs := protect(string(data))
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc, next yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, d.yamlError(refs.restore(err.Error()))
	}
	// yaml.v3 would silently ignore what follows a "---".
	if err := dec.Decode(&next); err == nil {
		return nil, d.errorAt(next.Line, "", "a second YAML document is not allowed")
	} else if !errors.Is(err, io.EOF) {
		return nil, d.yamlError(refs.restore(err.Error()))
	}
	cfg := &Config{Webhooks: DefaultWebhooks}
	d.lines[""] = 1
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root := doc.Content[0]
		refs.expand(root)
		if err := d.check(root, reflect.TypeOf(cfg), "", root.Line); err != nil {
			return nil, err
		}
		if err := root.Decode(cfg); err != nil {
			return nil, d.yamlError(err.Error())
		}
	}
	if err := d.loadSecrets(cfg); err != nil {
		return nil, err
	}
	if err := d.validate(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

var regexpType = reflect.TypeOf(Regexp{})

// check walks node n against Go type t, recording key lines under path.
func (d *decoder) check(n *yaml.Node, t reflect.Type, path string, line int) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if d.nodes++; d.nodes > maxNodes {
		return d.errorAt(line, path, "aliases expand to more than %d nodes", maxNodes)
	}
	d.lines[path] = line
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.ShortTag() == "!!null" {
		return nil
	}
	switch {
	case t.Kind() == reflect.Struct && t != regexpType:
		if n.Kind != yaml.MappingNode {
			return d.errorAt(line, path, "must be a mapping, not %s", n.ShortTag())
		}
		return d.checkMapping(n, t, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorAt(line, path, "must be a list, not %s", n.ShortTag())
		}
		for i, item := range n.Content {
			if err := d.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), item.Line); err != nil {
				return err
			}
		}
		return nil
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		var te *yaml.TypeError
		msgs := []string{err.Error()}
		if errors.As(err, &te) {
			msgs = te.Errors
		}
		for i, m := range msgs {
			msgs[i] = linePrefix.ReplaceAllString(m, "")
		}
		return d.errorAt(line, path, "%s", strings.Join(msgs, "; "))
	}
	return nil
}

func (d *decoder) checkMapping(n *yaml.Node, t reflect.Type, path string) error {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "-" {
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			if err := d.checkMerge(v, t, path); err != nil {
				return err
			}
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			return d.errorAt(k.Line, path, "field %s not found in type %s", k.Value, t)
		}
		key := join(path, k.Value)
		if prev, dup := seen[k.Value]; dup {
			return d.errorAt(k.Line, key, "already set at line %d", prev)
		}
		seen[k.Value] = k.Line
		if err := d.check(v, ft, key, k.Line); err != nil {
			return err
		}
	}
	return nil
}

// checkMerge checks the mappings merged in with "<<: *anchor" as if they
// were written in place; keys written in place override them, as in YAML.
func (d *decoder) checkMerge(v *yaml.Node, t reflect.Type, path string) error {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		return d.checkMapping(v, t, path)
	case yaml.SequenceNode:
		for _, m := range v.Content {
			if err := d.checkMerge(m, t, path); err != nil {
				return err
			}
		}
		return nil
	}
	return d.errorAt(v.Line, path, "<< must merge a mapping or a list of mappings")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
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

func (d *decoder) errorAt(line int, path, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	return fmt.Errorf("%s:%d: %s", d.file, line, msg)
}

var (
	linePrefix = regexp.MustCompile(`^line \d+: `)
	yamlLine   = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// yamlError rewrites yaml.v3's "line N: msg" lines into "file:N: msg".
// yaml.v3 leaves "line N" out when its 0-based mark is 0, so a message
// without one is about line 1.
func (d *decoder) yamlError(msg string) error {
	msgs := strings.Split(strings.TrimPrefix(msg, "yaml: unmarshal errors:\n"), "\n")
	for i, m := range msgs {
		m = strings.TrimSpace(m)
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			msgs[i] = d.file + ":" + sm[1] + ": " + sm[2]
		} else {
			msgs[i] = d.file + ":1: " + strings.TrimPrefix(m, "yaml: ")
		}
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// loadSecrets enforces the secret rules and reads the *_file secrets.
func (d *decoder) loadSecrets(c *Config) error {
	type slot struct {
		key   string // key path of the inline secret; the file key adds "_file"
		value *Secret
		file  string
	}
	var slots []slot
	if c.GitHub != nil {
		slots = append(slots, slot{"github.token", &c.GitHub.Token, c.GitHub.TokenFile})
	}
	w := &c.Webhooks
	slots = append(slots,
		slot{"webhooks.github.secret", &w.GitHub.Secret, w.GitHub.SecretFile},
		slot{"webhooks.supabase.secret", &w.Supabase.Secret, w.Supabase.SecretFile},
		slot{"webhooks.mailerlite.secret", &w.MailerLite.Secret, w.MailerLite.SecretFile},
		slot{"webhooks.cloudflare.secret", &w.Cloudflare.Secret, w.Cloudflare.SecretFile},
	)
	if c.Cloudflare != nil {
		slots = append(slots, slot{"cloudflare.api_token", &c.Cloudflare.APIToken, c.Cloudflare.APITokenFile})
	}
	for _, s := range slots {
		fileKey := s.key + "_file"
		_, inline := d.lines[s.key]
		_, fromFile := d.lines[fileKey]
		switch {
		case inline && fromFile:
			return d.errorf(fileKey, "set either %s or %s, not both", lastKey(s.key), lastKey(fileKey))
		case inline && *s.value == "":
			// An empty secret would silently turn signature checks off.
			return d.errorf(s.key, "is empty (an unset environment variable?); remove the key to go without")
		case fromFile && s.file == "":
			return d.errorf(fileKey, "is empty (an unset environment variable?); remove the key to go without")
		case fromFile:
			v, err := d.readSecretFile(s.file)
			if err != nil {
				return d.errorf(fileKey, "%v", err)
			}
			*s.value = v
		}
	}
	return nil
}

func lastKey(path string) string {
	return path[strings.LastIndexByte(path, '.')+1:]
}

// readSecretFile returns the file's content without surrounding white
// space (editors add a final newline). Errors name the file, never its
// content.
func (d *decoder) readSecretFile(name string) (Secret, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(d.dir, name)
	}
	// Opening a FIFO would block, and with it every later reload.
	if fi, err := os.Stat(name); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", name, err)
	}
	if len(b) > maxSecretFileBytes {
		return "", fmt.Errorf("%s is larger than %d bytes", name, maxSecretFileBytes)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", name)
	}
	return Secret(s), nil
}
