package forward

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moha-project/moha/internal/cluster"
	"github.com/moha-project/moha/internal/message"
)

// Delivery is one message the local broker delivered to the agent's data
// session. Ack tells the broker the agent has taken responsibility for it.
type Delivery interface {
	Msg() *message.Message
	Ack()
}

// Sender queues a message for one peer; done reports exactly once whether
// the peer acknowledged it, it was buffered for a peer that is down, or it
// was dropped. It is the cluster mesh.
type Sender interface {
	Send(ctx context.Context, peer string, m message.Message, done func(cluster.Outcome)) error
}

// Forwarder takes deliveries from the local broker, in order, and sends each
// to the peers whose interest matches, at most one copy per peer. The
// session's reader must never block (it also reads the acks of the agent's
// own publishes), so Enqueue only appends to an unbounded queue; the
// broker's flow control (the data session's Receive Maximum) bounds it for
// QoS 1 and 2.
type Forwarder struct {
	router  *Router
	sender  Sender
	metrics *Metrics
	perPeer map[string]*peerCounters // resolved once: no label hashing per message

	mu     sync.Mutex
	queue  []Delivery
	wake   chan struct{}
	queued atomic.Int64
}

// Metrics are the forwarding counters an operator graphs.
type Metrics struct {
	Skipped   *prometheus.CounterVec // messages a peer did not get because nothing there matched
	Targeted  *prometheus.CounterVec // messages handed to a peer's link
	Outcomes  *prometheus.CounterVec // per peer and outcome: acked, buffered, dropped
	Local     prometheus.Counter     // messages read from the local broker
	NoTargets prometheus.Counter     // messages that no peer needed at all
	Pending   prometheus.GaugeFunc
}

// NewMetrics registers the forwarding metrics on reg (which may be nil).
func NewMetrics(reg prometheus.Registerer, pending func() float64) *Metrics {
	m := &Metrics{
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_skipped_messages_total",
			Help: "Messages published locally that were not sent to a peer because no filter it advertises matches.",
		}, []string{"peer"}),
		Targeted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_targeted_messages_total",
			Help: "Messages published locally and queued for a peer because its interest matches (or they are retained).",
		}, []string{"peer"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_forward_outcomes_total",
			Help: "What became of messages queued for a peer: acked by its broker, buffered while it was down, or dropped.",
		}, []string{"peer", "outcome"}),
		Local: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moha_local_messages_total",
			Help: "Messages the local broker delivered to the agent's data session.",
		}),
		NoTargets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moha_unrouted_messages_total",
			Help: "Messages published locally that no peer needed (acknowledged at once).",
		}),
		Pending: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "moha_forward_queue_messages",
			Help: "Local messages waiting for the forwarding loop.",
		}, pending),
	}
	if reg != nil {
		reg.MustRegister(m.Skipped, m.Targeted, m.Outcomes, m.Local, m.NoTargets, m.Pending)
	}
	return m
}

// NewForwarder returns a forwarder routing with r and sending with s.
func NewForwarder(r *Router, s Sender, reg prometheus.Registerer) *Forwarder {
	f := &Forwarder{router: r, sender: s, wake: make(chan struct{}, 1)}
	f.metrics = NewMetrics(reg, func() float64 { return float64(f.queued.Load()) })
	f.perPeer = make(map[string]*peerCounters, len(r.order))
	for _, p := range r.order {
		f.perPeer[p] = &peerCounters{
			skipped:  f.metrics.Skipped.WithLabelValues(p),
			targeted: f.metrics.Targeted.WithLabelValues(p),
			acked:    f.metrics.Outcomes.WithLabelValues(p, "acked"),
			buffered: f.metrics.Outcomes.WithLabelValues(p, "buffered"),
			dropped:  f.metrics.Outcomes.WithLabelValues(p, "dropped"),
		}
	}
	return f
}

// Enqueue appends d to the forwarding queue. It never blocks.
func (f *Forwarder) Enqueue(d Delivery) {
	f.mu.Lock()
	f.queue = append(f.queue, d)
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
	var batch []Delivery
	targets := make([]string, 0, 8)
	for {
		f.mu.Lock()
		batch, f.queue = f.queue, batch[:0]
		f.mu.Unlock()
		for i, d := range batch {
			if err := f.forward(ctx, d, targets[:0]); err != nil {
				return err
			}
			batch[i] = nil // let the message be collected once its peers are done
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
// once each of them has reported an outcome [DESIGN.md §5].
func (f *Forwarder) forward(ctx context.Context, d Delivery, targets []string) error {
	m := d.Msg()
	f.metrics.Local.Inc()
	targets = f.router.Targets(m.Topic, m.Retain, targets)
	f.countSkipped(targets)
	if len(targets) == 0 {
		f.metrics.NoTargets.Inc()
		d.Ack()
		return nil
	}
	remaining := new(atomic.Int32)
	remaining.Store(int32(len(targets)))
	for _, peer := range targets {
		c := f.perPeer[peer]
		c.targeted.Inc()
		done := func(o cluster.Outcome) {
			c.outcome(o).Inc()
			if remaining.Add(-1) == 0 {
				d.Ack()
			}
		}
		if err := f.sender.Send(ctx, peer, *m, done); err != nil {
			return err // only when ctx ended: the broker redelivers what was not acked
		}
	}
	return nil
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
	skipped, targeted, acked, buffered, dropped prometheus.Counter
}

func (c *peerCounters) outcome(o cluster.Outcome) prometheus.Counter {
	switch o {
	case cluster.Acked:
		return c.acked
	case cluster.Buffered:
		return c.buffered
	default:
		return c.dropped
	}
}

// Metrics returns the forwarder's counters (tests read them).
func (f *Forwarder) Metrics() *Metrics { return f.metrics }
