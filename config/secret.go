package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	promconfig "github.com/prometheus/common/config"
)

const redacted = "<secret>"

// Secret is a token or shared secret. Every way of printing or marshalling a
// set secret gives "<secret>"; only Value returns what it holds. An unset
// secret prints as "", so a disabled source does not look configured.
// Marshalling is prometheus/common's config.Secret's; what this type adds
// is printing (fmt, String), which that one leaves to the value itself.
type Secret string

// Value returns the secret itself, for signing and authenticating.
func (s Secret) Value() string { return string(s) }

// String returns "<secret>", or "" when the secret is unset.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// Format prints String for every verb, %#v and %q included, so a config
// printed whole with %+v shows no secret.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalYAML returns "<secret>", or nothing when the secret is unset.
func (s Secret) MarshalYAML() (any, error) { return promconfig.Secret(s).MarshalYAML() }

// MarshalJSON returns "<secret>", or "" when the secret is unset, as a JSON
// string.
func (s Secret) MarshalJSON() ([]byte, error) { return promconfig.Secret(s).MarshalJSON() }

// maxSecretFileBytes bounds a *_file read, so that pointing one at a device
// or a large file fails instead of hanging or filling memory.
const maxSecretFileBytes = 64 << 10

// loadSecrets enforces the secret rules and reads the *_file secrets,
// reporting each problem.
func (d *decoder) loadSecrets(c *Config) {
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
			d.report(d.errorf(fileKey, "set either %s or %s, not both", lastKey(s.key), lastKey(fileKey)))
		case inline && *s.value == "":
			// An empty secret would silently turn signature checks off.
			d.report(d.errorf(s.key, "is empty%s", d.emptyBecause(s.key)))
		case fromFile && s.file == "":
			d.report(d.errorf(fileKey, "is empty%s", d.emptyBecause(fileKey)))
		case fromFile:
			v, err := d.readSecretFile(s.file)
			if err != nil {
				d.report(d.errorf(fileKey, "%v", err))
				break
			}
			*s.value = v
			continue
		default:
			continue
		}
		// The config is refused; validation goes on as if the secret were
		// set, so that it reports only problems of its own (not "needs
		// webhooks.supabase.secret" after "webhooks.supabase.secret: is
		// empty").
		*s.value = "unusable"
	}
}

// emptyBecause ends the message about the empty value of the key at path:
// it names the environment variables the value came from, when it has
// some.
func (d *decoder) emptyBecause(path string) string {
	var unset []string
	for _, name := range d.vars[path] {
		if v, _, ok := strings.Cut(name, ":-"); ok {
			name = v
		}
		if name != "$" && os.Getenv(name) == "" {
			unset = append(unset, "${"+name+"}")
		}
	}
	switch len(unset) {
	case 0:
		return "; remove the key to go without"
	case 1:
		return ": the environment variable " + unset[0] + " is unset or empty (set it, or remove the key to go without)"
	}
	return ": the environment variables " + strings.Join(unset, ", ") + " are unset or empty (set them, or remove the key to go without)"
}

func lastKey(path string) string {
	return path[strings.LastIndexByte(path, '.')+1:]
}

// readSecretFile returns the file's content without surrounding white
// space (editors add a final newline). Errors name neither the file nor its
// content: a secret typed into a *_file key would show in them.
func (d *decoder) readSecretFile(name string) (Secret, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(d.dir, name)
	}
	// Opening a FIFO would block, and with it every later reload.
	fi, err := os.Stat(name)
	if err != nil {
		return "", fileError(err)
	}
	if !fi.Mode().IsRegular() {
		return "", errors.New("is not a regular file")
	}
	f, err := os.Open(name)
	if err != nil {
		return "", fileError(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return "", fileError(err)
	}
	if len(b) > maxSecretFileBytes {
		return "", fmt.Errorf("the file is larger than %d bytes", maxSecretFileBytes)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("the file is empty")
	}
	return Secret(s), nil
}

// fileError says what went wrong with a *_file without the path that
// os errors carry.
func fileError(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("no such file (a relative path is read from the config file's directory)")
	}
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err
	}
	return fmt.Errorf("cannot read the file: %w", err)
}
