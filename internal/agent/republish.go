package agent

import (
	"container/list"
	"log/slog"
	"sync"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

// republisher publishes the messages peers forwarded into the local broker,
// on the data session (so No Local keeps them from being forwarded again),
// and acknowledges each to its peer once the broker accepted it. Messages
// whose session died before the broker answered stay pending and are
// published again, in order, on the next session: a peer's message is never
// acknowledged without the broker having it.
type republisher struct {
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	sess    *session.Session
	pending list.List // of *inbound, in arrival order
}

type inbound struct {
	peer string
	msg  message.Message
	ack  func()
	elem *list.Element // nil once acknowledged
}

func newRepublisher(log *slog.Logger, m *metrics) *republisher {
	return &republisher{log: log, metrics: m}
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
func (r *republisher) setSession(s *session.Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sess = s
	for e := r.pending.Front(); e != nil; e = e.Next() {
		r.publish(s, e.Value.(*inbound))
	}
}

// publish hands in to s; r.mu is held. The completion runs on a session
// goroutine.
func (r *republisher) publish(s *session.Session, in *inbound) {
	s.Publish(in.msg, func(err error) {
		if err != nil && !session.IsRejected(err) {
			return // the session ended first: still pending, setSession publishes it again
		}
		if err != nil {
			// The broker refused it (an ACL, a quota): retrying cannot help.
			r.metrics.inboundRejected.WithLabelValues(in.peer).Inc()
			r.log.Warn("broker refused a message from a peer", "peer", in.peer, "topic", in.msg.Topic, "err", err)
		} else {
			r.metrics.inboundPublished.WithLabelValues(in.peer).Inc()
		}
		r.complete(in)
	})
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
