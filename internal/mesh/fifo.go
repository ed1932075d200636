package mesh

// fifoBlock is how many items one block of a fifo holds.
const fifoBlock = 256

// fifo is a queue kept in fixed-size blocks. A peer's queue grows to
// hundreds of thousands of items when the peer falls behind: growing one
// slice copied all of it on every doubling and compacting it copied it
// again, into fresh memory each time, which cost the agent more than
// forwarding did. Blocks are never copied, and an emptied block is kept
// for reuse.
type fifo[T any] struct {
	blocks [][]T // blocks[0][head:] ... blocks[last][:tail]
	head   int   // first item's index in blocks[0]
	tail   int   // items in the last block
	n      int
	spare  []T // one emptied block, reused by the next push that needs one
}

func (q *fifo[T]) len() int { return q.n }

func (q *fifo[T]) push(v T) {
	if len(q.blocks) == 0 || q.tail == fifoBlock {
		q.blocks = append(q.blocks, q.newBlock())
		q.tail = 0
	}
	q.blocks[len(q.blocks)-1][q.tail] = v
	q.tail++
	q.n++
}

func (q *fifo[T]) newBlock() []T {
	if b := q.spare; b != nil {
		q.spare = nil
		return b
	}
	return make([]T, fifoBlock)
}

// peek returns the first item; the queue must not be empty.
func (q *fifo[T]) peek() *T { return &q.blocks[0][q.head] }

// at returns the i-th item from the first (0 ≤ i < len).
func (q *fifo[T]) at(i int) *T {
	i += q.head
	return &q.blocks[i/fifoBlock][i%fifoBlock]
}

// pop removes and returns the first item; the queue must not be empty.
func (q *fifo[T]) pop() T {
	var zero T
	b := q.blocks[0]
	v := b[q.head]
	b[q.head] = zero // release references
	q.head++
	q.n--
	switch {
	case q.n == 0:
		// Keep the one block for the next push.
		q.blocks[0] = nil
		q.blocks, q.head, q.tail, q.spare = q.blocks[:0], 0, 0, b
	case q.head == fifoBlock:
		q.blocks[0] = nil
		q.blocks, q.head, q.spare = q.blocks[1:], 0, b
	}
	return v
}

// drain removes and returns everything (a fresh slice).
func (q *fifo[T]) drain() []T {
	out := make([]T, 0, q.n)
	q.each(func(v *T) { out = append(out, *v) })
	q.clear()
	return out
}

// prepend puts vs, in order, before the queue's items.
func (q *fifo[T]) prepend(vs []T) {
	if len(vs) == 0 {
		return
	}
	rest := q.drain()
	for _, v := range vs {
		q.push(v)
	}
	for _, v := range rest {
		q.push(v)
	}
}

// each calls f for every item, first to last.
func (q *fifo[T]) each(f func(*T)) {
	for i, b := range q.blocks {
		from, to := 0, fifoBlock
		if i == 0 {
			from = q.head
		}
		if i == len(q.blocks)-1 {
			to = q.tail
		}
		for j := from; j < to; j++ {
			f(&b[j])
		}
	}
}

func (q *fifo[T]) clear() {
	for i := range q.blocks {
		q.blocks[i] = nil
	}
	*q = fifo[T]{blocks: q.blocks[:0]}
}
