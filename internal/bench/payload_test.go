package bench

import (
	"bytes"
	"errors"
	"testing"
)

func TestPayloadRoundTrip(t *testing.T) {
	h := header{RunID: 0x0102030405060708, Publisher: 19, Sequence: 2999, SentAt: 1_700_000_000_123_456_789}
	b := encodePayload(h, 100)
	if len(b) != 100 {
		t.Fatalf("len = %d, want 100", len(b))
	}
	got, err := decodePayload(b)
	if err != nil || got != h {
		t.Fatalf("decode = %+v, %v; want %+v", got, err, h)
	}
	if b := encodePayload(h, 3); len(b) != HeaderSize {
		t.Errorf("a payload never gets shorter than the header: len %d", len(b))
	}
}

func TestDecodePayloadRejects(t *testing.T) {
	if _, err := decodePayload(make([]byte, HeaderSize-1)); !errors.Is(err, ErrShortPayload) {
		t.Errorf("short: %v", err)
	}
	b := encodePayload(header{}, HeaderSize)
	b[0] = 'X'
	if _, err := decodePayload(b); !errors.Is(err, ErrBadMagic) {
		t.Errorf("bad magic: %v", err)
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add(encodePayload(header{RunID: 1, Publisher: 2, Sequence: 3, SentAt: 4}, 100))
	f.Add(encodePayload(header{RunID: ^uint64(0), Publisher: ^uint32(0), Sequence: ^uint32(0), SentAt: -1}, HeaderSize))
	f.Add([]byte("MHB1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodePayload(b)
		if err != nil {
			if len(b) >= HeaderSize && !errors.Is(err, ErrBadMagic) {
				t.Fatalf("unexpected error for %d bytes: %v", len(b), err)
			}
			return
		}
		// What decodes must encode back to the same header bytes.
		if again := encodePayload(h, len(b)); !bytes.Equal(again[:HeaderSize], b[:HeaderSize]) {
			t.Fatalf("round trip changed the header: %x -> %+v -> %x", b[:HeaderSize], h, again[:HeaderSize])
		}
	})
}
