package config

import (
	"fmt"
	"io"
)

const redacted = "<secret>"

// Secret is a token or shared secret. Every way of printing or marshalling a
// set secret gives "<secret>"; only Value returns what it holds. An unset
// secret prints as "", so a disabled source does not look configured.
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
func (s Secret) MarshalYAML() (any, error) {
	if s == "" {
		return nil, nil
	}
	return redacted, nil
}

// MarshalJSON returns "<secret>", or "" when the secret is unset, as a JSON
// string.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }
