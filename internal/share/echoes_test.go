package share

import (
	"strconv"
	"testing"
	"time"

	"github.com/moha-project/moha/internal/message"
)

func msg(topic, payload string) *message.Message {
	return &message.Message{Topic: topic, Payload: []byte(payload)}
}

func TestEchoes(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEchoes(5*time.Second, 100)
	if _, ok := e.Take(msg("a", "1"), now); ok {
		t.Fatal("an unknown message is an echo")
	}
	e.Note(msg("a", "1"), 0, now)
	e.Note(msg("a", "1"), 2, now) // the same pair twice: two echoes, oldest first
	if _, ok := e.Take(msg("a", "2"), now); ok {
		t.Fatal("another payload is an echo")
	}
	if _, ok := e.Take(msg("b", "1"), now); ok {
		t.Fatal("another topic is an echo")
	}
	if n, ok := e.Take(msg("a", "1"), now); !ok || n != 0 {
		t.Fatalf("Take = %d, %v; want the first note (0 attempts)", n, ok)
	}
	if n, ok := e.Take(msg("a", "1"), now); !ok || n != 2 {
		t.Fatalf("Take = %d, %v; want the second note (2 attempts)", n, ok)
	}
	if _, ok := e.Take(msg("a", "1"), now); ok {
		t.Fatal("an echo taken twice")
	}
	if e.Len() != 0 {
		t.Fatalf("Len = %d after every echo was taken", e.Len())
	}
}

func TestEchoesExpire(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEchoes(5*time.Second, 100)
	e.Note(msg("a", "1"), 0, now)
	e.Note(msg("a", "1"), 1, now.Add(3*time.Second))
	// The first expires; the second (same key) must survive it.
	if n, ok := e.Take(msg("a", "1"), now.Add(6*time.Second)); !ok || n != 1 {
		t.Fatalf("Take = %d, %v; want the later note to outlive the first", n, ok)
	}
	e.Note(msg("b", "1"), 0, now.Add(6*time.Second))
	if _, ok := e.Take(msg("b", "1"), now.Add(12*time.Second)); ok {
		t.Fatal("an expired note is still an echo")
	}
}

// A note taken before it expires must not take a later note of the same key
// with it when its FIFO record expires.
func TestEchoesExpiryOfTakenNote(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEchoes(5*time.Second, 100)
	e.Note(msg("a", "1"), 0, now)
	if _, ok := e.Take(msg("a", "1"), now); !ok {
		t.Fatal("not an echo")
	}
	e.Note(msg("a", "1"), 7, now.Add(4*time.Second))
	if n, ok := e.Take(msg("a", "1"), now.Add(6*time.Second)); !ok || n != 7 {
		t.Fatalf("Take = %d, %v; want the later note", n, ok)
	}
}

func TestEchoesBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	e := NewEchoes(time.Hour, 10)
	for i := range 5000 {
		e.Note(msg("a", strconv.Itoa(i)), 0, now)
	}
	if e.Len() != 10 {
		t.Fatalf("Len = %d, want the limit 10", e.Len())
	}
	if _, ok := e.Take(msg("a", "4999"), now); !ok {
		t.Fatal("the newest note is gone")
	}
	if _, ok := e.Take(msg("a", "0"), now); ok {
		t.Fatal("the oldest note outlived the limit")
	}
	if cap(e.order) > 4096 {
		t.Fatalf("the FIFO kept %d slots for 10 notes", cap(e.order))
	}
}

func BenchmarkEchoesNoteTake(b *testing.B) {
	e := NewEchoes(5*time.Second, 100000)
	m := msg("sensors/room1/temp", "21.5 degrees and some more payload bytes")
	now := time.Now()
	for b.Loop() {
		e.Note(m, 0, now)
		e.Take(m, now)
	}
}
