package mesh

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

// telemetry is message i of a JSON telemetry stream: field names repeat,
// values change.
func telemetry(i int) message.Message {
	return message.Message{
		Topic:   fmt.Sprintf("devices/sensor-%04d/telemetry", i%100),
		QoS:     1,
		Payload: fmt.Appendf(nil, `{"device":"sensor-%04d","ts":%d,"temperature":%.2f,"humidity":%.1f,"battery":%.2f,"status":"ok","firmware":"2.4.1"}`, i%100, 1733550000000+int64(i)*997, 18+float64(i%97)/7, 30+float64(i%53)/3, 3.3+float64(i%11)/20),
	}
}

// TestCompressedLinkCarriesEverything: a compressing a and a plain b link
// (the cluster file changed on one node so far); every message crosses
// both ways, in order, whole, and what a sends is much smaller than what b
// sends for the same messages.
func TestCompressedLinkCarriesEverything(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	a, b := pair(t, func(c *Config) { c.Compress = true }, nil, recA, recB)
	const n = 3000
	outA, outB := newOutcomes(t), newOutcomes(t)
	for i := range n {
		if err := a.Send(context.Background(), "b", telemetry(i), outA.done(i)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(context.Background(), "a", telemetry(i), outB.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "all acked both ways", func() bool { return outA.count(Acked) == n && outB.count(Acked) == n })
	for _, rec := range []struct {
		at   *recorder
		from string
	}{{recB, "a"}, {recA, "b"}} {
		rec.at.mu.Lock()
		got := rec.at.msgs[rec.from]
		rec.at.mu.Unlock()
		if len(got) != n {
			t.Fatalf("from %s: %d messages, want %d", rec.from, len(got), n)
		}
		for i, m := range got {
			if want := telemetry(i); m.Topic != want.Topic || !bytes.Equal(m.Payload, want.Payload) || m.QoS != want.QoS {
				t.Fatalf("from %s, message %d: %q on %s, want %q on %s", rec.from, i, m.Payload, m.Topic, want.Payload, want.Topic)
			}
		}
	}
	compressed := metric(t, a.reg, "moha_forward_bytes_total", map[string]string{"peer": "b"})
	plain := metric(t, b.reg, "moha_forward_bytes_total", map[string]string{"peer": "a"})
	t.Logf("%d telemetry messages: %v bytes compressed, %v plain (%.2fx)", n, compressed, plain, compressed/plain)
	if compressed > plain/3 {
		t.Fatalf("compressed link sent %v bytes, plain %v: want at most a third", compressed, plain)
	}
}

// TestInflaterRefusesBadStreams: a length over the frame limit, a stream
// that ends inside its batch, and garbage are protocol errors, not panics
// or allocations of the claimed size.
func TestInflaterRefusesBadStreams(t *testing.T) {
	d := newDeflater()
	good, err := d.appendBatch(nil, []byte("a batch body"))
	if err != nil {
		t.Fatal(err)
	}
	for name, z := range map[string][]byte{
		"length over the limit": append([]byte{0xff, 0xff, 0xff, 0xff, 0x7f}, good[1:]...),
		"cut short":             good[:len(good)-6],
		"garbage":               {12, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2},
		"no length":             {},
	} {
		if _, err := newInflater().batch(z); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if body, err := newInflater().batch(good); err != nil || string(body) != "a batch body" {
		t.Fatalf("good stream: %q, %v", body, err)
	}
}

// FuzzInflate feeds arbitrary frame bodies to a fresh inflater and to one
// that already took a valid batch: errors are fine, panics are not.
func FuzzInflate(f *testing.F) {
	d := newDeflater()
	first, _ := d.appendBatch(nil, []byte(`{"device":"sensor-0001","ts":1}`))
	second, _ := d.appendBatch(nil, []byte(`{"device":"sensor-0001","ts":2}`))
	f.Add(first)
	f.Add(second)
	f.Add([]byte{5, 0xff})
	f.Fuzz(func(t *testing.T, z []byte) {
		_, _ = newInflater().batch(z)
		in := newInflater()
		if _, err := in.batch(first); err != nil {
			t.Fatal(err)
		}
		_, _ = in.batch(z)
	})
}
