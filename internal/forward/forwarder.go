package forward

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/topic"
)

// Delivery is one message the local broker delivered to the agent's data
// session. Ack tells the broker the agent has taken responsibility for it.
// The message must not change once enqueued: the replay history keeps it.
type Delivery interface {
	Msg() *message.Message
	Ack()
}

// Sender queues a message for one peer; done reports exactly once whether
// the peer acknowledged it, it was buffered for a peer that is down, or it
// was dropped. It is the cluster mesh.
type Sender interface {
	Send(ctx context.Context, peer string, m message.Message, done func(message.Outcome)) error
}

// Forwarder takes deliveries from the local broker, in order, and sends each
// to the peers whose interest matches, at most one copy per peer. The
// session's reader must never block (it also reads the acks of the agent's
// own publishes), so Enqueue only appends to an unbounded queue; the
// broker's flow control (the data session's Receive Maximum) bounds it for
// QoS 1 and 2.
//
// Peers' interest changes pass through the same queue (Interest): the
// forwarding loop applies each to the router and, for a delta that adds
// filters, replays from its history what the local broker accepted since
// the change that the peer did not get — before any later message, so
// each publisher's order per topic holds.
type Forwarder struct {
	router  *Router
	sender  Sender
	metrics *Metrics
	perPeer map[string]*peerCounters // resolved once: no label hashing per message
	all     uint64                   // every peer's bit
	history *history                 // owned by the forwarding loop

	mu     sync.Mutex
	queue  []item
	wake   chan struct{}
	queued atomic.Int64
}

// item is one entry of the forwarding queue: a delivery or a peer's
// interest change.
type item struct {
	d      Delivery
	change *peerChange
}

type peerChange struct {
	peer    string
	ch      mesh.InterestChange
	applied func(invalid []string)
}

// Metrics are the forwarding counters an operator graphs.
type Metrics struct {
	Skipped   *prometheus.CounterVec // messages a peer did not get because nothing there matched
	Targeted  *prometheus.CounterVec // messages handed to a peer's link
	Outcomes  *prometheus.CounterVec // per peer and outcome: acked, buffered, dropped
	Local     prometheus.Counter     // messages read from the local broker
	NoTargets prometheus.Counter     // messages that no peer needed at all
	Pending   prometheus.GaugeFunc
	Replayed  *prometheus.CounterVec // history messages sent to a peer whose interest grew
	Evicted   prometheus.Counter     // history messages dropped for the byte cap before their window ended
	Delay     prometheus.Histogram   // a peer's interest change: from the change there to here
}

// NewMetrics registers the forwarding metrics on reg (which may be nil).
func NewMetrics(reg prometheus.Registerer, pending func() float64) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Skipped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_skipped_messages_total",
			Help: "Messages published locally that were not sent to a peer because no filter it advertises matches.",
		}, []string{"peer"}),
		Targeted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_targeted_messages_total",
			Help: "Messages published locally and queued for a peer because its interest matches (or they are retained).",
		}, []string{"peer"}),
		Outcomes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_forward_outcomes_total",
			Help: "What became of messages queued for a peer: acked by its broker, buffered while it was down, dropped, or abandoned when the agent stopped (left unacknowledged: the broker redelivers them to the next run).",
		}, []string{"peer", "outcome"}),
		Local: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_local_messages_total",
			Help: "Messages the local broker delivered to the agent's data session.",
		}),
		NoTargets: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_unrouted_messages_total",
			Help: "Messages published locally that no peer needed (acknowledged at once).",
		}),
		Pending: f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "moha_forward_queue_messages",
			Help: "Local messages waiting for the forwarding loop.",
		}, pending),
		Replayed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_replayed_messages_total",
			Help: "Messages accepted here before a peer's new subscription was known here, sent to that peer from the history (the subscribe window).",
		}, []string{"peer"}),
		Evicted: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_history_evicted_messages_total",
			Help: "Messages dropped from the replay history for its byte limit before their window ended: a subscription made elsewhere while they were published may miss them.",
		}),
		Delay: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "moha_interest_delay_seconds",
			Help:    "Time from a peer's interest change (its clock) until this agent's forwarding loop applied it: the subscribe window the replay history covers.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
	}
}

// NewForwarder returns a forwarder routing with r and sending with s,
// keeping a replay history within limits (a zero Window keeps none).
func NewForwarder(r *Router, s Sender, reg prometheus.Registerer, limits HistoryLimits) *Forwarder {
	f := &Forwarder{router: r, sender: s, wake: make(chan struct{}, 1)}
	if len(r.order) > 64 {
		limits.Window = 0 // a peer is a bit of a uint64
	}
	f.history = newHistory(limits)
	f.metrics = NewMetrics(reg, func() float64 { return float64(f.queued.Load()) })
	f.perPeer = make(map[string]*peerCounters, len(r.order))
	for i, p := range r.order {
		f.all |= 1 << i
		f.perPeer[p] = &peerCounters{
			bit:       1 << i,
			replayed:  f.metrics.Replayed.WithLabelValues(p),
			skipped:   f.metrics.Skipped.WithLabelValues(p),
			targeted:  f.metrics.Targeted.WithLabelValues(p),
			acked:     f.metrics.Outcomes.WithLabelValues(p, "acked"),
			buffered:  f.metrics.Outcomes.WithLabelValues(p, "buffered"),
			dropped:   f.metrics.Outcomes.WithLabelValues(p, "dropped"),
			abandoned: f.metrics.Outcomes.WithLabelValues(p, "abandoned"),
		}
	}
	return f
}

// Enqueue appends d to the forwarding queue. It never blocks.
func (f *Forwarder) Enqueue(d Delivery) {
	f.push(item{d: d})
}

// Interest queues a change of peer's interest for the forwarding loop,
// which applies it to the router in order with the deliveries queued
// before it, replays what the peer missed, and then calls applied (may be
// nil) with the filters the router refused. It never blocks.
func (f *Forwarder) Interest(peer string, ch mesh.InterestChange, applied func(invalid []string)) {
	f.push(item{change: &peerChange{peer: peer, ch: ch, applied: applied}})
}

func (f *Forwarder) push(it item) {
	f.mu.Lock()
	f.queue = append(f.queue, it)
	f.mu.Unlock()
	f.queued.Add(1)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Pending returns the number of deliveries waiting in the queue.
func (f *Forwarder) Pending() int { return int(f.queued.Load()) }

// Run forwards queued deliveries until ctx ends. It owns no goroutine but
// the caller's.
func (f *Forwarder) Run(ctx context.Context) error {
	var batch []item
	targets := make([]string, 0, 8)
	for {
		f.mu.Lock()
		batch, f.queue = f.queue, batch[:0]
		f.mu.Unlock()
		for i, it := range batch {
			var err error
			if it.change != nil {
				err = f.applyChange(ctx, it.change)
			} else {
				err = f.forward(ctx, it.d, targets[:0])
			}
			if err != nil {
				return err
			}
			batch[i] = item{} // let the message be collected once its peers are done
			f.queued.Add(-1)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.wake:
		}
	}
}

// forward sends d to every target peer and acknowledges it to the broker
// once each of them has reported an outcome (docs/ARCHITECTURE.md, The data path) — never when one
// was Abandoned (the mesh stopped): the broker redelivers it to the next run.
func (f *Forwarder) forward(ctx context.Context, d Delivery, targets []string) error {
	m := d.Msg()
	f.metrics.Local.Inc()
	targets = f.router.Targets(m.Topic, m.Retain, targets)
	f.countSkipped(targets)
	if !m.Retain { // retained messages go to every peer
		if sent := f.sentMask(targets); sent != f.all {
			f.history.add(m, time.Now().UnixNano(), sent)
			if n := f.history.takeEvicted(); n > 0 {
				f.metrics.Evicted.Add(float64(n))
			}
		}
	}
	if len(targets) == 0 {
		f.metrics.NoTargets.Inc()
		d.Ack()
		return nil
	}
	owed := &ackCountdown{}
	owed.remaining.Store(int32(len(targets)))
	for _, peer := range targets {
		c := f.perPeer[peer]
		c.targeted.Inc()
		done := func(o message.Outcome) {
			c.outcome(o).Inc()
			if owed.report(o) {
				d.Ack()
			}
		}
		if err := f.sender.Send(ctx, peer, *m, done); err != nil {
			return err // only when ctx ended: the broker redelivers what was not acked
		}
	}
	return nil
}

// ackCountdown is what a delivery still waits for: the outcomes owed by its
// target peers, and whether one of them was Abandoned (the mesh stopped:
// the broker keeps the message for the next run, so it is never acked).
type ackCountdown struct {
	remaining atomic.Int32
	abandoned atomic.Bool
}

// report records one outcome and tells whether the delivery may now be
// acknowledged to the broker.
func (a *ackCountdown) report(o message.Outcome) bool {
	if o == message.Abandoned {
		a.abandoned.Store(true)
	}
	return a.remaining.Add(-1) == 0 && !a.abandoned.Load()
}

// sentMask returns the bits of the peers in targets.
func (f *Forwarder) sentMask(targets []string) uint64 {
	var sent uint64
	for _, p := range targets {
		sent |= f.perPeer[p].bit
	}
	return sent
}

// applyChange applies a peer's interest change to the router and, for a
// delta that adds plain filters, sends the peer what the history holds for
// them since the change.
func (f *Forwarder) applyChange(ctx context.Context, c *peerChange) error {
	invalid := f.router.Apply(c.peer, c.ch.Replace, c.ch.Added, c.ch.Removed)
	defer func() {
		if c.applied != nil {
			c.applied(invalid)
		}
	}()
	pc := f.perPeer[c.peer]
	if c.ch.Replace || c.ch.At == 0 || pc == nil {
		return nil
	}
	now := time.Now().UnixNano()
	f.metrics.Delay.Observe(max(0, time.Duration(now-c.ch.At).Seconds()))
	f.history.expire(now)
	if !f.history.unsentSince(pc.bit, c.ch.At) {
		return nil // nothing to replay: no trie of the added filters to build
	}
	added := addedFilters(c.ch.Added)
	if added == nil {
		return nil
	}
	var sendErr error
	n := f.history.replay(pc.bit, added, c.ch.At, now, func(m message.Message) {
		if sendErr == nil {
			sendErr = f.sender.Send(ctx, c.peer, m, func(o message.Outcome) { pc.outcome(o).Inc() })
		}
	})
	pc.replayed.Add(float64(n))
	return sendErr
}

// addedFilters returns a trie of the plain filters among added (shared
// subscriptions are served by one member node: not replayed), or nil.
func addedFilters(added []string) *topic.Trie {
	var t *topic.Trie
	for _, f := range added {
		if strings.HasPrefix(f, "$share/") {
			continue
		}
		if t == nil {
			t = topic.NewTrie()
		}
		_, _ = t.Add(f)
	}
	return t
}

// countSkipped counts, per peer, that this message did not go there.
func (f *Forwarder) countSkipped(targets []string) {
	peers := f.router.order // immutable after NewRouter
	if len(targets) == len(peers) {
		return
	}
	j := 0
	for _, p := range peers {
		if j < len(targets) && targets[j] == p {
			j++
			continue
		}
		f.perPeer[p].skipped.Inc()
	}
}

type peerCounters struct {
	bit                                                              uint64
	skipped, targeted, acked, buffered, dropped, abandoned, replayed prometheus.Counter
}

func (c *peerCounters) outcome(o message.Outcome) prometheus.Counter {
	switch o {
	case message.Acked:
		return c.acked
	case message.Buffered:
		return c.buffered
	case message.Abandoned:
		return c.abandoned
	default:
		return c.dropped
	}
}

// Metrics returns the forwarder's counters (tests read them).
func (f *Forwarder) Metrics() *Metrics { return f.metrics }
