package webhook

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// The workflow_run and workflow_job payloads are ~10-15 KB of which the
// Tracker needs a dozen short fields; the rest is the repository, sender,
// organisation, head commit and steps. encoding/json validated the whole
// body once and then walked it again to decode, which made it the largest
// cost of a delivery. extractFields does both in one pass over the bytes and
// builds nothing for the members it skips.
//
// It agrees with decodeObject over encoding/json (FuzzDecodeWorkflowRunDiff
// holds the latter as its oracle): the same bodies are rejected, with the
// same syntax error messages and byte offsets, and the same values come out
// of the accepted ones. That includes encoding/json's quirks: keys match
// field names case-insensitively (with Unicode folding, so "ſtatus" is
// "status"), the last of duplicate keys wins, nested objects under repeated
// keys merge, null leaves a field alone except that it resets a pointer to a
// struct, and an int field rejects 1e3 and 1.0. Errors keep encoding/json's
// precedence: any syntax error, else the first error from a time field
// (which stopped encoding/json's decoding), else the first type mismatch.
// The one deliberate difference: a mismatch where an object belongs says
// "object" where encoding/json named the Go struct type.

// maxDepth is encoding/json's nesting limit, so that a body nested deeper
// is rejected as it was rather than recursed into.
const maxDepth = 10000

// A field is a member to copy out of an object.
type field struct {
	// name is the member name as in a json struct tag.
	name string
	// dst is *string, *int64, *int, *time.Time or *object.
	dst any
}

// An object is a nested JSON object to descend into.
type object struct {
	// nullable marks an object that encoding/json decoded into a pointer
	// to a struct: null makes the pointer nil again, so the fields read so
	// far are cleared and present is false.
	nullable bool
	// present is whether the member was an object, and not null since.
	present bool
	fields  []field
}

// jsonScanner holds the state of one extractFields call.
type jsonScanner struct {
	data  []byte
	depth int
	// syntax is the first syntax error in the words of encoding/json's
	// scanner, and syntaxAt its json.SyntaxError.Offset. It stops the scan;
	// fatal and typeErr only stop recording, as the rest of the body must
	// still be checked for syntax errors, which win.
	syntax   string
	syntaxAt int
	fatal    error
	typeErr  error
	// escaped and nonASCII describe the last string scanned, so that
	// unquoting can take the short way.
	escaped, nonASCII bool
}

// extractFields reads the JSON object in body into fields, with the errors
// decodeObject would give.
func extractFields(body []byte, fields []field) error {
	s := jsonScanner{data: body}
	i := s.space(0)
	if i == len(body) || body[i] != '{' {
		return errNotObject
	}
	i = s.object(i, "", fields)
	if i >= 0 {
		if i = s.space(i); i < len(body) {
			s.fail(i, "after top-level value")
		}
	}
	switch {
	case s.syntax != "":
		return fmt.Errorf("malformed JSON at byte %d: %s", s.syntaxAt, s.syntax)
	case s.fatal != nil:
		return fmt.Errorf("malformed JSON: %w", s.fatal)
	}
	return s.typeErr
}

// fail records a syntax error at data[i], or at the end of the input if i
// is past it: encoding/json then reports the space it feeds its scanner at
// EOF, which fails only inside an escape, a number or a literal.
func (s *jsonScanner) fail(i int, context string) int {
	c, off := byte(' '), len(s.data)
	if i < len(s.data) {
		c, off = s.data[i], i+1
	}
	s.syntax, s.syntaxAt = "invalid character "+quoteChar(c)+" "+context, off
	return -1
}

// failEOF records that the input ended inside a value.
func (s *jsonScanner) failEOF() int {
	s.syntax, s.syntaxAt = "unexpected end of JSON input", len(s.data)
	return -1
}

// space returns the index of the first non-space byte at or after i.
func (s *jsonScanner) space(i int) int {
	for i < len(s.data) {
		switch s.data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// object reads the object whose '{' is at data[i] and returns the index
// after its '}', or -1 after a syntax error. path names the object in type
// errors.
func (s *jsonScanner) object(i int, path string, fields []field) int {
	if s.depth++; s.depth > maxDepth {
		return s.fail(i, "exceeded max depth")
	}
	if i = s.space(i + 1); i == len(s.data) {
		return s.failEOF()
	}
	if s.data[i] == '}' {
		s.depth--
		return i + 1
	}
	for {
		if s.data[i] != '"' {
			return s.fail(i, "looking for beginning of object key string")
		}
		start := i
		if i = s.str(i); i < 0 {
			return -1
		}
		var f *field
		if len(fields) > 0 {
			f = s.match(fields, s.data[start+1:i-1])
		}
		if i = s.space(i); i == len(s.data) {
			return s.failEOF()
		}
		if s.data[i] != ':' {
			return s.fail(i, "after object key")
		}
		if i = s.space(i + 1); i == len(s.data) {
			return s.failEOF()
		}
		if f == nil {
			i = s.value(i)
		} else {
			i = s.member(i, path, f)
		}
		if i < 0 {
			return -1
		}
		if i = s.space(i); i == len(s.data) {
			return s.failEOF()
		}
		switch s.data[i] {
		case ',':
			if i = s.space(i + 1); i == len(s.data) {
				return s.failEOF()
			}
		case '}':
			s.depth--
			return i + 1
		default:
			return s.fail(i, "after object key:value pair")
		}
	}
}

// array skips the array whose '[' is at data[i].
func (s *jsonScanner) array(i int) int {
	if s.depth++; s.depth > maxDepth {
		return s.fail(i, "exceeded max depth")
	}
	if i = s.space(i + 1); i == len(s.data) {
		return s.failEOF()
	}
	if s.data[i] == ']' {
		s.depth--
		return i + 1
	}
	for {
		if i = s.value(i); i < 0 {
			return -1
		}
		if i = s.space(i); i == len(s.data) {
			return s.failEOF()
		}
		switch s.data[i] {
		case ',':
			if i = s.space(i + 1); i == len(s.data) {
				return s.failEOF()
			}
		case ']':
			s.depth--
			return i + 1
		default:
			return s.fail(i, "after array element")
		}
	}
}

// value skips the value that starts at data[i], which is not a space.
func (s *jsonScanner) value(i int) int {
	switch c := s.data[i]; {
	case c == '"':
		return s.str(i)
	case c == '{':
		return s.object(i, "", nil)
	case c == '[':
		return s.array(i)
	case c == 't':
		return s.literal(i, "true")
	case c == 'f':
		return s.literal(i, "false")
	case c == 'n':
		return s.literal(i, "null")
	case c == '-' || '0' <= c && c <= '9':
		return s.number(i)
	}
	return s.fail(i, "looking for beginning of value")
}

// plain marks the bytes a string may hold without attention: not '"' or
// '\\', not a control character JSON forbids, and ASCII.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = false, false
	return t
}()

// special returns, in the high bit of each byte, which bytes of the eight in
// x (little-endian) are not plain. Only the lowest marked byte is certain:
// the subtractions' borrows can mark bytes above it too.
func special(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ ones*'"'
	backslash := x ^ ones*'\\'
	return (x-ones*0x20)&^x | (quote-ones)&^quote | (backslash-ones)&^backslash | x&highs
}

// str skips the string whose '"' is at data[i] and sets s.escaped and
// s.nonASCII. Most of a payload is strings, so it looks at eight bytes at a
// time until one needs attention.
func (s *jsonScanner) str(i int) int {
	s.escaped, s.nonASCII = false, false
	data := s.data
	i++
	for {
		for i+8 <= len(data) {
			if m := special(binary.LittleEndian.Uint64(data[i:])) & 0x8080808080808080; m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		for i < len(data) && plain[data[i]] {
			i++
		}
		if i == len(data) {
			return s.failEOF()
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c >= utf8.RuneSelf:
			s.nonASCII = true
		case c == '\\':
			s.escaped = true
			if i++; i == len(data) {
				return s.fail(i, "in string escape code")
			}
			switch data[i] {
			case 'b', 'f', 'n', 'r', 't', '\\', '/', '"':
			case 'u':
				for range 4 {
					if i++; i == len(data) || !isHex(data[i]) {
						return s.fail(i, "in \\u hexadecimal character escape")
					}
				}
			default:
				return s.fail(i, "in string escape code")
			}
		default:
			return s.fail(i, "in string literal")
		}
		i++
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// literal skips true, false or null, whose first byte is at data[i].
func (s *jsonScanner) literal(i int, lit string) int {
	for k := 1; k < len(lit); k++ {
		if i+k == len(s.data) || s.data[i+k] != lit[k] {
			return s.fail(i+k, "in literal "+lit+" (expecting "+quoteChar(lit[k])+")")
		}
	}
	return i + len(lit)
}

// number skips the number that starts at data[i].
func (s *jsonScanner) number(i int) int {
	data := s.data
	if data[i] == '-' {
		if i++; i == len(data) || !isDigit(data[i]) {
			return s.fail(i, "in numeric literal")
		}
	}
	if data[i] == '0' {
		i++
	} else {
		i = s.digits(i)
	}
	if i < len(data) && data[i] == '.' {
		if i++; i == len(data) || !isDigit(data[i]) {
			return s.fail(i, "after decimal point in numeric literal")
		}
		i = s.digits(i)
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		if i++; i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i == len(data) || !isDigit(data[i]) {
			return s.fail(i, "in exponent of numeric literal")
		}
		i = s.digits(i)
	}
	return i
}

func (s *jsonScanner) digits(i int) int {
	for i < len(s.data) && isDigit(s.data[i]) {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// match finds the field named by a key, the raw bytes between its quotes,
// the way encoding/json does: an exact match, else a match after case
// folding. The names are lower-case ASCII and distinct after folding, so
// the folded comparison is needed only for keys with upper-case or
// non-ASCII letters.
func (s *jsonScanner) match(fields []field, key []byte) *field {
	if s.escaped {
		key = unquote(key, true)
	}
	for k := range fields {
		if string(key) == fields[k].name {
			return &fields[k]
		}
	}
	fold := false
	for _, c := range key {
		if 'A' <= c && c <= 'Z' || c >= utf8.RuneSelf {
			fold = true
			break
		}
	}
	if fold {
		for k := range fields {
			if foldEqual(key, fields[k].name) {
				return &fields[k]
			}
		}
	}
	return nil
}

// foldEqual reports whether key matches the lower-case ASCII name under
// encoding/json's folding, which maps every rune to the smallest rune of
// its Unicode fold orbit and upper-cases ASCII: "ſ" (U+017F) folds to "S"
// and "K" (U+212A, Kelvin) to "K". An invalid byte decodes to U+FFFD and
// matches nothing, as it would after encoding/json's unquoting.
func foldEqual(key []byte, name string) bool {
	j := 0
	for i := 0; i < len(key); j++ {
		if j == len(name) {
			return false
		}
		r := rune(key[i])
		if r < utf8.RuneSelf {
			i++
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
		} else {
			var n int
			r, n = utf8.DecodeRune(key[i:])
			i += n
			r = foldRune(r)
		}
		want := rune(name[j])
		if 'a' <= want && want <= 'z' {
			want -= 'a' - 'A'
		}
		if r != want {
			return false
		}
	}
	return j == len(name)
}

// foldRune returns the smallest rune of r's fold orbit.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// member reads the value at data[i] into f.
func (s *jsonScanner) member(i int, path string, f *field) int {
	if o, ok := f.dst.(*object); ok && s.data[i] == '{' {
		o.present = true
		child := f.name
		if path != "" {
			child = path + "." + f.name
		}
		return s.object(i, child, o.fields)
	}
	start := i
	if i = s.value(i); i < 0 {
		return -1
	}
	raw := s.data[start:i]
	if s.fatal != nil {
		// encoding/json stopped decoding at the fatal error.
		return i
	}
	c := raw[0]
	switch dst := f.dst.(type) {
	case *time.Time:
		// time.Time decodes itself from the raw bytes, null included.
		if err := dst.UnmarshalJSON(raw); err != nil {
			s.fatal = err
		}
	case *string:
		switch c {
		case '"':
			*dst = s.text(raw)
		case 'n':
		default:
			s.mismatch(path, f.name, kindOf(c), "string")
		}
	case *int64:
		if n, ok := s.integer(raw, 64, path, f.name, "int64"); ok {
			*dst = n
		}
	case *int:
		if n, ok := s.integer(raw, strconv.IntSize, path, f.name, "int"); ok {
			*dst = int(n)
		}
	case *object:
		switch {
		case c != 'n':
			s.mismatch(path, f.name, kindOf(c), "object")
		case dst.nullable:
			dst.present = false
			zero(dst.fields)
		}
	}
	return i
}

// zero zeroes the destinations of fields, as a fresh struct would be.
func zero(fields []field) {
	for _, f := range fields {
		switch dst := f.dst.(type) {
		case *string:
			*dst = ""
		case *int64:
			*dst = 0
		case *int:
			*dst = 0
		case *time.Time:
			*dst = time.Time{}
		case *object:
			dst.present = false
			zero(dst.fields)
		}
	}
}

// integer parses raw for an integer field as encoding/json does: a number
// with a fraction or an exponent, or one out of range, is a mismatch, and
// null leaves the field alone.
func (s *jsonScanner) integer(raw []byte, bits int, path, name, typ string) (int64, bool) {
	switch c := raw[0]; {
	case c == 'n':
		return 0, false
	case c == '-' || isDigit(c):
		n, err := strconv.ParseInt(string(raw), 10, bits)
		if err != nil {
			s.mismatch(path, name, "number "+string(raw), typ)
			return 0, false
		}
		return n, true
	default:
		s.mismatch(path, name, kindOf(c), typ)
		return 0, false
	}
}

// kindOf names the JSON type of a value by its first byte, as
// json.UnmarshalTypeError does.
func kindOf(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	}
	return "number"
}

// mismatch records the first type error, in decodeObject's words. The
// message is concatenated rather than formatted so that the field names do
// not escape, and with them the destinations of every field.
func (s *jsonScanner) mismatch(path, name, value, typ string) {
	if s.typeErr != nil {
		return
	}
	if path != "" {
		path += "."
	}
	s.typeErr = errors.New("field " + path + name + ": JSON " + value + " where " + typ + " was expected")
}

// text returns the string raw (quotes included) denotes, taking the short
// way for the usual string without escapes or invalid UTF-8.
func (s *jsonScanner) text(raw []byte) string {
	raw = raw[1 : len(raw)-1]
	if !s.escaped && (!s.nonASCII || utf8.Valid(raw)) {
		return string(raw)
	}
	return string(unquote(raw, s.escaped))
}

// unquote decodes the validated contents of a JSON string like
// encoding/json: invalid UTF-8 and unpaired surrogate escapes become
// U+FFFD.
func unquote(b []byte, escaped bool) []byte {
	if !escaped && utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+2*utf8.UTFMax)
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '\\' && b[i+1] == 'u':
			r := hex4(b[i:])
			i += 6
			if utf16.IsSurrogate(r) {
				// A valid pair is one rune; otherwise the next escape is
				// decoded on its own.
				if dec := utf16.DecodeRune(r, hex4(b[i:])); dec != unicode.ReplacementChar {
					r = dec
					i += 6
				} else {
					r = unicode.ReplacementChar
				}
			}
			out = utf8.AppendRune(out, r)
		case c == '\\':
			out = append(out, unescape[b[i+1]])
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			out = utf8.AppendRune(out, r)
			i += n
		}
	}
	return out
}

// unescape maps the byte after a backslash to what the escape stands for.
var unescape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 decodes a \uXXXX escape at the start of b, or returns -1 if there
// is none.
func hex4(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// quoteChar formats c as encoding/json's scanner does in its messages.
func quoteChar(c byte) string {
	switch c {
	case '\'':
		return `'\''`
	case '"':
		return `'"'`
	}
	q := strconv.Quote(string(rune(c)))
	return "'" + q[1:len(q)-1] + "'"
}
