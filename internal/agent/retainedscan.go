package agent

import (
	"context"
	"time"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

// scanRetained learns the retained messages the broker holds that the agent
// did not see written (restored from persistence, written while it was
// away), for the anti-entropy digest.
func (a *Agent) scanRetained(ctx context.Context) error {
	found := 0
	err := a.scanBroker(ctx, func(m *message.Message) {
		a.retained.LearnScanned(m)
		found++
	})
	if err != nil {
		return err
	}
	a.scanOnce.Do(func() { close(a.scanned) })
	a.log.Debug("retained scan done", "found", found)
	return nil
}

// rescanLoop scans the broker's retained messages each time its retained
// count changed: a retained message on a topic no data subscription matched
// was not seen written. It is forwarded from the scan, and its topic joins
// the data session's filters so that later writes are seen.
func (a *Agent) rescanLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.rescan:
		}
		found := 0
		err := a.scanBroker(ctx, func(m *message.Message) {
			stamp, unseen := a.retained.StampFound(m, time.Now())
			if !unseen {
				return
			}
			msg := *m
			msg.Payload = append([]byte(nil), m.Payload...) // the session reuses its buffer
			msg.Written = stamp
			a.forwarder.Enqueue(scannedWrite{&msg})
			found++
		})
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("retained rescan failed", "err", err)
			}
			continue
		}
		a.metrics.retainedRescans.Inc()
		if found > 0 {
			a.log.Debug("retained rescan found writes not seen", "messages", found)
		}
	}
}

// scanBroker hands fn every retained message the broker holds (not "$"
// topics). A second SUBSCRIBE's SUBACK marks the end: the broker sends the
// first one's retained messages before it. fn runs on the scan session's
// reader; scanBroker returns after its last call.
func (a *Agent) scanBroker(ctx context.Context, fn func(*message.Message)) error {
	cfg := a.sessionConfig(a.scanClientID())
	cfg.CleanStart = true
	s, err := session.Dial(ctx, cfg, func(d *session.Delivery) {
		if d.Message.Retain {
			fn(&d.Message)
		}
	})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Subscribe(ctx, session.Subscription{Filter: "#", QoS: 0, RetainAsPublished: true}); err != nil {
		return err
	}
	return s.Subscribe(ctx, session.Subscription{Filter: probeFilter, QoS: 0})
}

// scannedWrite is a retained write found by a rescan, for the forwarder:
// the broker has it already, nothing to acknowledge.
type scannedWrite struct{ m *message.Message }

func (w scannedWrite) Msg() *message.Message { return w.m }

func (w scannedWrite) Ack() {}
