package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

const (
	dialTimeout = 10 * time.Second
	keepAlive   = 30 // seconds
	// subscriberReceiveMaximum bounds what the broker keeps in flight to a
	// subscriber.
	subscriberReceiveMaximum = 4096
	publisherReceiveMaximum  = 16 // publishers receive nothing
	// minAckWait is the shortest wait for one acknowledgement before a
	// publisher gives its connection up for dead.
	minAckWait = 10 * time.Second
	// setupParallelism bounds concurrent connects so that 500 subscribers do
	// not hit the broker's accept queue at once.
	setupParallelism = 16
)

// errPublisherStalled is returned when acknowledgements stop coming.
var errPublisherStalled = errors.New("bench: no acknowledgement within the wait, connection given up")

// connectClient dials ep and completes the MQTT v5 handshake with paho's
// client: enough for the low-rate helpers (the bridge probe's publisher,
// the interest benchmark); the workload's clients use dialSession.
func connectClient(ctx context.Context, ep endpoint, cfg paho.ClientConfig, receiveMax uint16) (*paho.Client, error) {
	dialer := net.Dialer{Timeout: dialTimeout}
	conn, err := dialer.DialContext(ctx, "tcp", ep.Address)
	if err != nil {
		return nil, fmt.Errorf("dial %s for %s: %w", ep.Address, ep.ClientID, err)
	}
	// A *net.TCPConn as is: paho writes each packet as net.Buffers, which a
	// TCPConn sends in one locked writev; through any wrapper they become
	// separate writes that concurrent senders (acks, pings) could interleave.
	cfg.Conn = conn
	c := paho.NewClient(cfg)
	_, err = c.Connect(ctx, &paho.Connect{
		ClientID:   ep.ClientID,
		CleanStart: true,
		KeepAlive:  keepAlive,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMax},
	})
	if err != nil { // paho closed the connection
		return nil, fmt.Errorf("connect %s to %s: %w", ep.ClientID, ep.Address, err)
	}
	return c, nil
}

// dialSession connects ep with the agents' lean MQTT v5 session
// (internal/session): reads through a buffer, writes batched, many
// publishes in flight with a completion each. paho.Client reads every
// packet header with separate read calls and writes each packet on its own:
// with it the load generator used more than half of the machine's CPU in
// 'moha bench compare', leaving less for the brokers it measures
// (docs/benchmarks-journal.md, round 5).
func dialSession(ctx context.Context, ep endpoint, receiveMax uint16, persistent bool, h session.Handler) (*session.Session, error) {
	cfg := session.Config{
		Addr: ep.Address, ClientID: ep.ClientID, CleanStart: true, KeepAlive: keepAlive,
		ReceiveMaximum: receiveMax, ConnectTimeout: dialTimeout, Logger: quietLogger,
	}
	if persistent {
		cfg.CleanStart, cfg.SessionExpiry = false, persistentExpiry
	}
	s, err := session.Dial(ctx, cfg, h)
	if err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", ep.ClientID, ep.Address, err)
	}
	return s, nil
}

// persistentExpiry is the session expiry of --persistent subscribers.
const persistentExpiry = 3600

// quietLogger drops the sessions' own logs: the run reports what matters.
var quietLogger = slog.New(slog.DiscardHandler)

// connectSubscriber connects ep and subscribes its filter, waiting for the
// SUBACK; every payload received goes to onPayload, on the session's reader.
func connectSubscriber(ctx context.Context, ep endpoint, qos byte, persistent bool, onPayload func([]byte)) (*session.Session, error) {
	s, err := dialSession(ctx, ep, subscriberReceiveMaximum, persistent, func(d *session.Delivery) {
		onPayload(d.Message.Payload)
		d.Ack()
	})
	if err != nil {
		return nil, err
	}
	err = s.Subscribe(ctx, session.Subscription{
		Filter:         ep.Topic,
		QoS:            qos,
		RetainHandling: 2, // retained messages are not this run's traffic
	})
	if err != nil {
		closeSession(s)
		return nil, fmt.Errorf("subscribe %s to %q on %s: %w", ep.ClientID, ep.Topic, ep.Address, err)
	}
	return s, nil
}

// closeSession disconnects cleanly; lost says the connection had already
// ended before.
func closeSession(s *session.Session) (lost bool) {
	select {
	case <-s.Done():
		lost = true
	default:
	}
	_ = s.Close() // the connection may already be gone
	return lost
}

// closeClient disconnects a paho client (the low-rate helpers') and waits
// until it has stopped.
func closeClient(c *paho.Client) {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) // the connection may already be gone
}

// publisher is one publishing client and what it achieved.
type publisher struct {
	index int
	ep    endpoint
	sess  *session.Session
	// acks receives each publish's completion; room for the whole window,
	// so the session's goroutine never waits on it.
	acks chan error
	done func(error) // sends to acks: one closure for every publish

	published atomic.Int64 // acknowledged (QoS 0: written)
	errors    atomic.Int64
	start     time.Time
	end       time.Time
}

func connectPublisher(ctx context.Context, index int, ep endpoint, window int) (*publisher, error) {
	s, err := dialSession(ctx, ep, publisherReceiveMaximum, false, func(d *session.Delivery) { d.Ack() })
	if err != nil {
		return nil, err
	}
	p := &publisher{index: index, ep: ep, sess: s, acks: make(chan error, window)}
	p.done = func(err error) { p.acks <- err }
	return p, nil
}

func (p *publisher) close() (lost bool) { return closeSession(p.sess) }

// publishConfig is what every publisher of a run shares.
type publishConfig struct {
	runID    uint64
	messages int
	size     int
	json     bool // PayloadJSON: size is ignored
	qos      byte
	window   int
	ackWait  time.Duration
}

// run publishes every message in sequence order, keeping up to window of
// them unacknowledged (QoS 0: unwritten), and returns when all are
// acknowledged, the connection is gone, or ctx is done.
func (p *publisher) run(ctx context.Context, cfg publishConfig) {
	p.start = time.Now()
	defer func() { p.end = time.Now() }()
	ackTimer := time.NewTimer(cfg.ackWait)
	defer ackTimer.Stop()
	inflight := 0
	for seq := range cfg.messages {
		for inflight >= cfg.window {
			if err := p.awaitAck(ctx, ackTimer, cfg.ackWait); err != nil {
				p.giveUp(ctx, inflight+cfg.messages-seq)
				return
			}
			inflight--
		}
		if ctx.Err() != nil {
			return
		}
		p.publish(cfg, seq)
		inflight++
	}
	for ; inflight > 0; inflight-- {
		if err := p.awaitAck(ctx, ackTimer, cfg.ackWait); err != nil {
			p.giveUp(ctx, inflight)
			return
		}
	}
}

// publish queues message seq; its completion arrives on p.acks.
func (p *publisher) publish(cfg publishConfig, seq int) {
	h := header{
		RunID:     cfg.runID,
		Publisher: uint32(p.index),
		Sequence:  uint32(seq),
		SentAt:    time.Now().UnixNano(),
	}
	var payload []byte
	if cfg.json {
		payload = encodeJSONPayload(h)
	} else {
		payload = encodePayload(h, cfg.size)
	}
	p.sess.Publish(message.Message{Topic: p.ep.Topic, QoS: cfg.qos, Payload: payload}, p.done)
}

// awaitAck waits for one completion and counts its outcome: acknowledged,
// or refused by the broker. It returns an error, counting nothing, when
// the connection ended (the session completes what it held with that
// error), acknowledgements stopped coming, or ctx ended: giveUp counts.
func (p *publisher) awaitAck(ctx context.Context, timer *time.Timer, wait time.Duration) error {
	timer.Reset(wait)
	select {
	case err := <-p.acks:
		switch {
		case err == nil:
			p.published.Add(1)
		case session.IsRejected(err):
			p.errors.Add(1)
		default:
			return err
		}
		return nil
	case <-timer.C:
		return errPublisherStalled
	case <-ctx.Done():
		return ctx.Err()
	}
}

// giveUp counts the messages a dead connection will never deliver; a
// cancelled run counts nothing, it was stopped on purpose.
func (p *publisher) giveUp(ctx context.Context, undone int) {
	if ctx.Err() == nil {
		p.errors.Add(int64(undone))
	}
}
