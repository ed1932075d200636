package mesh

import (
	"encoding/binary"
	"runtime"
	"testing"
)

// allocated returns the bytes fn allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// minimalBatch is a PUBLISH_BATCH body of n messages of the smallest
// encoding (flags, a one-byte topic, an empty payload), each with a user
// property list of k empty pairs when k > 0.
func minimalBatch(n, k int) []byte {
	b := binary.AppendUvarint(nil, 1) // firstSeq
	b = binary.AppendUvarint(b, uint64(n))
	for range n {
		if k > 0 {
			b = append(b, flagHasProps, 1, 't', 0, propUser)
			b = binary.AppendUvarint(b, uint64(k))
			for range k {
				b = append(b, 0, 0)
			}
			continue
		}
		b = append(b, 0, 1, 't', 0)
	}
	return b
}

// TestDecodeAllocationIsBounded (issue 15 §5): what decoding a frame from a
// peer allocates is bounded by a small multiple of the frame's size plus a
// constant, whatever the frame claims or holds: a 64 MiB frame must not
// cost gigabytes.
func TestDecodeAllocationIsBounded(t *testing.T) {
	cases := []struct {
		name string
		body []byte
	}{
		{"1 MiB of minimal messages", minimalBatch((1<<20)/4, 0)},
		{"the most messages a batch may hold", minimalBatch(maxBatchMessages, 0)},
		{"the most user properties a batch may hold", minimalBatch(64, maxBatchUserProps/64)},
		{"1 MiB of empty user properties", minimalBatch(64, (1<<20)/64/2)},
		{"a count claiming 1 MiB of messages, then garbage", append(binary.AppendUvarint(binary.AppendUvarint(nil, 1), (1<<20)/3), make([]byte, 1<<20)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := allocated(func() { _, _ = decodeFrame(framePublishBatch, tc.body) })
			if limit := uint64(4<<20 + 4*len(tc.body)); n > limit {
				t.Fatalf("decoding %d bytes allocated %d (%.0fx), limit %d", len(tc.body), n, float64(n)/float64(len(tc.body)), limit)
			}
		})
	}
}
