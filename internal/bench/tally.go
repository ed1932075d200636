package bench

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// tally records every arrival of a run, per (subscriber, publisher) stream.
type tally struct {
	plan  *plan
	runID uint64
	subs  []*subscriberTally

	delivered   atomic.Int64 // distinct expected deliveries, all subscribers
	lastArrival atomic.Int64 // unix nanos of the latest distinct delivery
	// lastCrossArrival is the latest distinct delivery whose publisher
	// used another address than the subscriber (it crossed between nodes).
	lastCrossArrival atomic.Int64
	complete         chan struct{}
	closeOnce        sync.Once
}

// subscriberTally is one subscriber's record. paho calls a client's
// handler from one goroutine, so the lock is uncontended; it is there so
// the final read needs no reasoning about paho's internals.
type subscriberTally struct {
	mu         sync.Mutex
	streams    []*stream // by publisher index, allocated on first arrival
	delivered  int64
	crossNode  int64 // of delivered, those published on another address
	duplicated int64
	outOfOrder int64
	stray      int64
	latencies  []int64 // nanoseconds, one per distinct delivery
}

// stream is what one subscriber saw of one publisher.
type stream struct {
	expected bool
	cross    bool     // publisher and subscriber use different addresses
	seen     []uint64 // bit per sequence number
	highest  int64    // highest sequence seen, -1 before the first
}

func newTally(p *plan, runID uint64) *tally {
	t := &tally{plan: p, runID: runID, complete: make(chan struct{})}
	t.subs = make([]*subscriberTally, len(p.Subscribers))
	for i := range t.subs {
		t.subs[i] = &subscriberTally{streams: make([]*stream, len(p.Publishers))}
	}
	if p.Expected == 0 {
		t.closeOnce.Do(func() { close(t.complete) })
	}
	return t
}

// record accounts one payload that subscriber sub received at now.
func (t *tally) record(sub int, payload []byte, now time.Time) {
	st := t.subs[sub]
	h, err := decodePayload(payload)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil || h.RunID != t.runID || int64(h.Publisher) >= int64(len(st.streams)) ||
		int64(h.Sequence) >= int64(t.plan.Messages) {
		st.stray++
		return
	}
	s := st.streams[h.Publisher]
	if s == nil {
		s = &stream{expected: t.plan.expects(sub, int(h.Publisher)), highest: -1,
			cross: t.plan.Subscribers[sub].Address != t.plan.Publishers[h.Publisher].Address}
		if s.expected {
			s.seen = make([]uint64, (t.plan.Messages+63)/64)
		}
		st.streams[h.Publisher] = s
	}
	if !s.expected {
		st.stray++
		return
	}
	word, bit := h.Sequence/64, uint64(1)<<(h.Sequence%64)
	if s.seen[word]&bit != 0 {
		st.duplicated++
		return
	}
	s.seen[word] |= bit
	st.delivered++
	if int64(h.Sequence) < s.highest {
		st.outOfOrder++
	} else {
		s.highest = int64(h.Sequence)
	}
	st.latencies = append(st.latencies, max(now.UnixNano()-h.SentAt, 0))
	if s.cross {
		st.crossNode++
		storeLatest(&t.lastCrossArrival, now.UnixNano())
	}
	t.noteDelivery(now)
}

func (t *tally) noteDelivery(now time.Time) {
	storeLatest(&t.lastArrival, now.UnixNano())
	if t.delivered.Add(1) == t.plan.Expected {
		t.closeOnce.Do(func() { close(t.complete) })
	}
}

// storeLatest raises v to nanos unless it already holds a later time.
func storeLatest(v *atomic.Int64, nanos int64) {
	for {
		last := v.Load()
		if nanos <= last || v.CompareAndSwap(last, nanos) {
			return
		}
	}
}

// tallySummary is the sum over subscribers.
type tallySummary struct {
	Delivered, CrossNode, Duplicated, OutOfOrder, Stray int64
	Latencies                                           []int64 // sorted
}

func (t *tally) summary() tallySummary {
	var s tallySummary
	for _, st := range t.subs {
		st.mu.Lock()
		s.Delivered += st.delivered
		s.CrossNode += st.crossNode
		s.Duplicated += st.duplicated
		s.OutOfOrder += st.outOfOrder
		s.Stray += st.stray
		s.Latencies = append(s.Latencies, st.latencies...)
		st.mu.Unlock()
	}
	slices.Sort(s.Latencies)
	return s
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted
// nanoseconds, 0 for none.
func percentile(sorted []int64, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return time.Duration(sorted[min(max(rank, 0), len(sorted)-1)])
}
