package agent

import (
	"container/list"
	"log/slog"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

// Retries of a message the broker refused for a reason that may pass (a
// quota, an unspecified error): 100 ms, doubling, at most 5 s apart, 8
// times (about 20 s), then it is dropped and counted.
const (
	retryFirst    = 100 * time.Millisecond
	retryMax      = 5 * time.Second
	retryAttempts = 8
)

// brokerPublisher is what the republisher needs of the data session.
type brokerPublisher interface {
	Publish(m message.Message, done func(error))
}

// republisher publishes the messages peers forwarded into the local broker,
// on the data session (so No Local keeps them from being forwarded again),
// and acknowledges each to its peer once the broker accepted it. Messages
// whose session died before the broker answered stay pending and are
// published again, in order, on the next session: a peer's message is never
// acknowledged without the broker having it. A refusal that may pass is
// retried with backoff, bounded; one that will repeat drops the message,
// counted by reason.
type republisher struct {
	log     *slog.Logger
	metrics *metrics
	// first, max and attempts: the retry policy (the constants above;
	// tests shorten it).
	first, max time.Duration
	attempts   int

	// superseded, if set, reports whether a newer retained write to m's
	// topic was applied since m: a retry then publishes m live but does not
	// store it (it must not overwrite the newer value).
	superseded func(m *message.Message) bool

	mu      sync.Mutex
	sess    brokerPublisher
	pending list.List // of *inbound, in arrival order
}

type inbound struct {
	peer     string
	msg      message.Message
	ack      func()
	elem     *list.Element // nil once acknowledged
	attempts int           // transient refusals so far (under r.mu)
}

func newRepublisher(log *slog.Logger, m *metrics) *republisher {
	return &republisher{log: log, metrics: m, first: retryFirst, max: retryMax, attempts: retryAttempts}
}

// deliver is the mesh's Deliver callback: it must not block.
func (r *republisher) deliver(peer string, m message.Message, ack func()) {
	in := &inbound{peer: peer, msg: m, ack: ack}
	r.mu.Lock()
	defer r.mu.Unlock()
	in.elem = r.pending.PushBack(in)
	if r.sess != nil {
		r.publish(r.sess, in)
	}
}

// setSession installs a new data session and publishes everything still
// pending on it, in order.
func (r *republisher) setSession(s brokerPublisher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sess = s
	for e := r.pending.Front(); e != nil; e = e.Next() {
		r.publish(s, e.Value.(*inbound))
	}
}

// publish hands in to s; r.mu is held. The completion runs on a session
// goroutine.
func (r *republisher) publish(s brokerPublisher, in *inbound) {
	s.Publish(in.msg, func(err error) {
		switch {
		case err != nil && !session.IsRejected(err):
			return // the session ended first: still pending, setSession publishes it again
		case err != nil && session.IsTransient(err) && r.retryLater(in, err):
			return
		case err != nil:
			// The broker refused it for good (an ACL, an invalid topic, a
			// size), or kept refusing: dropped, counted.
			r.metrics.inboundRejected.WithLabelValues(in.peer, session.RefusalReason(err)).Inc()
			r.log.Warn("broker refused a message from a peer: dropped", "peer", in.peer, "topic", in.msg.Topic, "err", err)
		default:
			r.metrics.inboundPublished.WithLabelValues(in.peer).Inc()
		}
		r.complete(in)
	})
}

// retryLater schedules in to be published again after a transient
// refusal, and reports false once it was refused retryAttempts times.
func (r *republisher) retryLater(in *inbound, err error) bool {
	r.mu.Lock()
	if in.attempts >= r.attempts {
		r.mu.Unlock()
		return false
	}
	in.attempts++
	delay := min(r.first<<(in.attempts-1), r.max)
	r.mu.Unlock()
	r.metrics.inboundRetries.WithLabelValues(in.peer, session.RefusalReason(err)).Inc()
	time.AfterFunc(delay, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if in.elem == nil || r.sess == nil {
			return
		}
		if in.msg.Retain && r.superseded != nil && r.superseded(&in.msg) {
			in.msg.Retain = false // later writes were stored meanwhile: last writer wins
		}
		r.publish(r.sess, in)
	})
	return true
}

func (r *republisher) complete(in *inbound) {
	r.mu.Lock()
	if in.elem == nil {
		r.mu.Unlock()
		return // already completed by an earlier attempt
	}
	r.pending.Remove(in.elem)
	in.elem = nil
	r.mu.Unlock()
	in.ack()
}

// Pending returns how many peer messages wait for the broker.
func (r *republisher) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending.Len()
}
