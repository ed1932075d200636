package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/retained"
	"github.com/moha-project/moha/internal/session"
)

// retainedScans reads the retained messages the broker holds through the
// scan session: once per broker connection before the live data session
// subscribes (scan, on the broker loop's goroutine), and again each time
// the broker's retained count changes (rescanLoop, one goroutine per
// broker connection). Any goroutine may request a rescan (the data
// sessions' readers, the log session's reader, the broker loop): requests
// is a channel. lastCount is the log session reader's only; first is
// closed once, under firstOnce, and waited on by the digest goroutines.
type retainedScans struct {
	session session.Config // the scan session's, clean start
	all     bool           // data_subscription all: "#" sees every retained write
	store   *retained.Store
	enqueue func(forward.Delivery) // the forwarder's: a write found by a rescan goes to the peers
	rescans prometheus.Counter
	log     *slog.Logger

	first     chan struct{} // closed after the first scan
	firstOnce sync.Once
	requests  chan struct{} // the broker's retained count changed (capacity 1)
	lastCount string        // the broker's retained count last seen
}

func newRetainedScans(cfg session.Config, all bool, store *retained.Store, enqueue func(forward.Delivery), rescans prometheus.Counter, log *slog.Logger) *retainedScans {
	cfg.CleanStart = true
	return &retainedScans{session: cfg, all: all, store: store, enqueue: enqueue, rescans: rescans, log: log,
		first: make(chan struct{}), requests: make(chan struct{}, 1)}
}

// scan learns the retained messages the broker holds that the agent did
// not see written (restored from persistence, written while it was away),
// for the anti-entropy digest.
func (s *retainedScans) scan(ctx context.Context) error {
	found := 0
	err := s.scanBroker(ctx, func(m *message.Message) {
		s.store.LearnScanned(m)
		found++
	})
	if err != nil {
		return err
	}
	s.firstOnce.Do(func() { close(s.first) })
	s.log.Debug("retained scan done", "found", found)
	return nil
}

// waitFirst waits for the first scan; false if ctx ended first.
func (s *retainedScans) waitFirst(ctx context.Context) bool {
	select {
	case <-s.first:
		return true
	case <-ctx.Done():
		return false
	}
}

// request asks the rescan loop for a scan of the broker's retained
// messages.
func (s *retainedScans) request() {
	select {
	case s.requests <- struct{}{}:
	default:
	}
}

// countChanged follows the broker's retained count (log session reader
// only): a new value asks for a rescan. With data_subscription all, "#"
// sees every retained write.
func (s *retainedScans) countChanged(n string) {
	if n != s.lastCount && !s.all {
		s.lastCount = n
		s.request()
	}
}

// rescanLoop scans the broker's retained messages on each request: a
// retained message on a topic no data subscription matched was not seen
// written. It is forwarded from the scan, and its topic joins the data
// session's filters so that later writes are seen.
func (s *retainedScans) rescanLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.requests:
		}
		found, err := s.rescan(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("retained rescan failed", "err", err)
			}
			continue
		}
		s.rescans.Inc()
		if found > 0 {
			s.log.Debug("retained rescan found writes not seen", "messages", found)
		}
	}
}

// rescan forwards the retained writes a scan finds that were not seen
// written, and returns how many.
func (s *retainedScans) rescan(ctx context.Context) (found int, err error) {
	err = s.scanBroker(ctx, func(m *message.Message) {
		stamp, unseen := s.store.StampFound(m, time.Now())
		if !unseen {
			return
		}
		msg := *m
		msg.Payload = append([]byte(nil), m.Payload...) // the session reuses its buffer
		msg.Written = stamp
		s.enqueue(scannedWrite{&msg})
		found++
	})
	return found, err
}

// scanBroker hands fn every retained message the broker holds (not "$"
// topics). A second SUBSCRIBE's SUBACK marks the end: the broker sends the
// first one's retained messages before it. fn runs on the scan session's
// reader; scanBroker returns after its last call.
func (s *retainedScans) scanBroker(ctx context.Context, fn func(*message.Message)) error {
	sess, err := session.Dial(ctx, s.session, func(d *session.Delivery) {
		if d.Message.Retain {
			fn(&d.Message)
		}
	})
	if err != nil {
		return err
	}
	defer sess.Close()
	if err := sess.Subscribe(ctx, session.Subscription{Filter: "#", QoS: 0, RetainAsPublished: true}); err != nil {
		return err
	}
	return sess.Subscribe(ctx, session.Subscription{Filter: probeFilter, QoS: 0})
}

// scannedWrite is a retained write found by a rescan, for the forwarder:
// the broker has it already, nothing to acknowledge.
type scannedWrite struct{ m *message.Message }

func (w scannedWrite) Msg() *message.Message { return w.m }

func (w scannedWrite) Ack() {}
