package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// HeaderSize is the size of the binary header every payload starts with;
// Options.Size must be at least this.
//
//	offset  size  field
//	0       4     magic "MHB1"
//	4       8     run id (big endian)
//	12      4     publisher index
//	16      4     sequence number
//	20      8     send time, unix nanoseconds
const HeaderSize = 28

var payloadMagic = [4]byte{'M', 'H', 'B', '1'}

var (
	// ErrShortPayload is returned for a payload shorter than HeaderSize.
	ErrShortPayload = errors.New("bench: payload shorter than header")
	// ErrBadMagic is returned for a payload that is not a bench payload.
	ErrBadMagic = errors.New("bench: payload magic mismatch")
)

// header is what a subscriber learns from one payload.
type header struct {
	RunID     uint64
	Publisher uint32
	Sequence  uint32
	SentAt    int64 // unix nanoseconds
}

// encodePayload returns a payload of size bytes (at least HeaderSize)
// starting with h; the rest is zero padding.
func encodePayload(h header, size int) []byte {
	b := make([]byte, max(size, HeaderSize))
	copy(b[0:4], payloadMagic[:])
	binary.BigEndian.PutUint64(b[4:12], h.RunID)
	binary.BigEndian.PutUint32(b[12:16], h.Publisher)
	binary.BigEndian.PutUint32(b[16:20], h.Sequence)
	binary.BigEndian.PutUint64(b[20:28], uint64(h.SentAt))
	return b
}

// The payload kinds (Options.Payload).
const (
	PayloadZeros = "zeros"
	PayloadJSON  = "json"
)

// encodeJSONPayload returns the header h followed by a JSON telemetry
// document, about 190 bytes: the field names repeat from message to
// message, the values change as a device's readings would.
func encodeJSONPayload(h header) []byte {
	b := encodePayload(h, HeaderSize)
	s := h.Sequence
	return fmt.Appendf(b, `{"device":"sensor-%05d","site":"plant-%d","ts":%d,"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"battery":%.2f,"rssi":%d,"status":"%s","firmware":"2.4.%d"}`,
		h.Publisher, h.Publisher%4, h.SentAt/int64(time.Millisecond),
		18+float64(s%173)/10, 30+float64(s%317)/10, 990+float64(s%401)/10,
		3.3+float64(s%91)/100, -50-int(s%40), []string{"ok", "ok", "ok", "warn"}[s%4], h.Publisher%3)
}

// decodePayload reads the header of a payload; bytes after it are ignored.
func decodePayload(b []byte) (header, error) {
	if len(b) < HeaderSize {
		return header{}, fmt.Errorf("%w: %d bytes", ErrShortPayload, len(b))
	}
	if [4]byte(b[0:4]) != payloadMagic {
		return header{}, ErrBadMagic
	}
	return header{
		RunID:     binary.BigEndian.Uint64(b[4:12]),
		Publisher: binary.BigEndian.Uint32(b[12:16]),
		Sequence:  binary.BigEndian.Uint32(b[16:20]),
		SentAt:    int64(binary.BigEndian.Uint64(b[20:28])),
	}, nil
}
