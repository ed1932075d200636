package mesh

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestFifoMatchesASlice runs random operations on a fifo and on a plain
// slice and compares them after each one, across block boundaries.
func TestFifoMatchesASlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q fifo[int]
	var model []int
	next := 0
	for step := range 200000 {
		switch op := rng.IntN(100); {
		case op < 55:
			q.push(next)
			model = append(model, next)
			next++
		case op < 95 && len(model) > 0:
			if got := q.pop(); got != model[0] {
				t.Fatalf("step %d: pop = %d, want %d", step, got, model[0])
			}
			model = model[1:]
		case op < 96:
			vs := []int{-next - 1, -next - 2}
			q.prepend(vs)
			model = append(slices.Clone(vs), model...)
		case op < 97:
			if got := q.drain(); !slices.Equal(got, model) && len(got)+len(model) > 0 {
				t.Fatalf("step %d: drain = %d items, want %d", step, len(got), len(model))
			}
			model = nil
		case op < 98:
			q.clear()
			model = nil
		case len(model) > 0:
			i := rng.IntN(len(model))
			if got := *q.at(i); got != model[i] {
				t.Fatalf("step %d: at(%d) = %d, want %d", step, i, got, model[i])
			}
		}
		if q.len() != len(model) {
			t.Fatalf("step %d: len = %d, want %d", step, q.len(), len(model))
		}
		if len(model) > 0 && *q.peek() != model[0] {
			t.Fatalf("step %d: peek = %d, want %d", step, *q.peek(), model[0])
		}
	}
	var all []int
	q.each(func(v *int) { all = append(all, *v) })
	if !slices.Equal(all, model) && len(all)+len(model) > 0 {
		t.Fatalf("each: %d items, want %d", len(all), len(model))
	}
}

// TestFifoReleasesPoppedItems checks that a popped slot no longer holds
// its item (a queued message's payload must be collectable once sent).
func TestFifoReleasesPoppedItems(t *testing.T) {
	var q fifo[*int]
	for i := range 3 * fifoBlock {
		q.push(&i)
	}
	for range fifoBlock + 1 {
		q.pop()
	}
	if q.blocks[0][q.head-1] != nil {
		t.Fatal("the popped slot still holds its item")
	}
	if q.spare == nil {
		t.Fatal("the emptied block was not kept for reuse")
	}
}

func BenchmarkFifoBacklog(b *testing.B) {
	var q fifo[item]
	for range 100000 {
		q.push(item{size: 1})
	}
	b.ResetTimer()
	for range b.N {
		q.push(item{size: 1})
		q.pop()
	}
}

func BenchmarkFifoGrowAndDrain(b *testing.B) {
	for range b.N {
		var q fifo[item]
		for range 100000 {
			q.push(item{size: 1})
			q.push(item{size: 1})
			q.pop()
		}
		for q.len() > 0 {
			q.pop()
		}
	}
}
