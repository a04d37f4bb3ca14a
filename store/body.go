package store

import (
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Bodies in the log are stored compressed with S2: webhook payloads are
// 10–20 KB of JSON that S2 shrinks about 4.4 times in about 5 µs, and every
// page of a body costs two writes to the WAL and one more at the
// checkpoint. Storing them raw cost about an eighth of the exporter's CPU
// per webhook (make bench, "CPU per webhook at 16 clients"). The column
// body_codec says how a body is stored: empty for as received (the
// entries written before schema version 4), "s2" for compressed.
const codecS2 = "s2"

// encodeBody returns the body as stored, in buf when it is big enough,
// and its codec.
func encodeBody(buf, body []byte) ([]byte, string) {
	if body == nil {
		return nil, ""
	}
	return s2.Encode(buf[:cap(buf)], body), codecS2
}

// decodeBody returns the body as received.
func decodeBody(stored []byte, codec string) ([]byte, error) {
	switch codec {
	case "":
		return stored, nil
	case codecS2:
		body, err := s2.Decode(nil, stored)
		if err != nil {
			return nil, fmt.Errorf("decompressing body: %w", err)
		}
		return body, nil
	default:
		return nil, fmt.Errorf("body stored with unknown codec %q", codec)
	}
}
