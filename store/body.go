package store

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
)

// Values of deliveries.body_encoding.
const (
	// encodingIdentity is a body stored as received.
	encodingIdentity = "identity"
	// encodingFlate is a raw DEFLATE stream (RFC 1951, no zlib or gzip
	// header) of the body as received.
	encodingFlate = "flate"
)

// flateWriters pools compressors: a flate.Writer allocates about 1 MB of
// tables, far more than the bodies it compresses.
var flateWriters = sync.Pool{New: func() any {
	w, err := flate.NewWriter(io.Discard, flate.BestSpeed)
	if err != nil {
		// Only an invalid level fails, and BestSpeed is valid.
		panic(err)
	}
	return w
}}

// encodeBody compresses a delivery body for storage. It runs in the caller
// of Submit, in parallel, so the single writer writes about a fifth of the
// WAL pages a raw webhook payload spans. A body that does not shrink is
// stored as is.
func encodeBody(body []byte) (encoding string, stored []byte) {
	var buf bytes.Buffer
	buf.Grow(len(body) / 4)
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&buf)
	// Writes to a bytes.Buffer cannot fail.
	w.Write(body)
	w.Close()
	flateWriters.Put(w)
	if buf.Len() >= len(body) {
		return encodingIdentity, body
	}
	return encodingFlate, buf.Bytes()
}

// decodeBody returns the body as received from a stored one.
func decodeBody(encoding string, stored []byte) ([]byte, error) {
	switch encoding {
	case encodingIdentity:
		return stored, nil
	case encodingFlate:
		r := flate.NewReader(bytes.NewReader(stored))
		defer r.Close()
		body, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("store: decoding delivery body: %w", err)
		}
		return body, nil
	}
	return nil, fmt.Errorf("store: unknown delivery body encoding %q", encoding)
}
