package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

const (
	dialTimeout = 10 * time.Second
	keepAlive   = 30 // seconds
	// subscriberReceiveMaximum bounds what the broker keeps in flight to a
	// subscriber; paho also sizes a channel by it, so 65535 per client would
	// cost half a megabyte each at 500 subscribers.
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

// connectClient dials ep and completes the MQTT v5 handshake.
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

// connectSubscriber connects ep and subscribes its filter, waiting for the
// SUBACK; every payload received goes to onPayload.
func connectSubscriber(ctx context.Context, ep endpoint, qos byte, onPayload func([]byte)) (*paho.Client, error) {
	cfg := paho.ClientConfig{
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				onPayload(pr.Packet.Payload)
				return true, nil
			},
		},
	}
	c, err := connectClient(ctx, ep, cfg, subscriberReceiveMaximum)
	if err != nil {
		return nil, err
	}
	_, err = c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{
		Topic:          ep.Topic,
		QoS:            qos,
		RetainHandling: 2, // retained messages are not this run's traffic
	}}})
	if err != nil {
		closeClient(c)
		return nil, fmt.Errorf("subscribe %s to %q on %s: %w", ep.ClientID, ep.Topic, ep.Address, err)
	}
	return c, nil
}

// closeClient disconnects cleanly and waits until the client has stopped;
// lost says the connection had already ended before.
func closeClient(c *paho.Client) (lost bool) {
	select {
	case <-c.Done():
		lost = true
	default:
	}
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0}) // the connection may already be gone
	return lost
}

// windowSession is paho's in-memory session with one change: completions
// of QoS 1/2 publishes all go to the publisher's acks channel. Publishing
// with AsyncSend from one goroutine then writes messages in sequence order
// while the publisher keeps a window of them in flight and still learns the
// outcome of each — which paho.Client does not offer by itself.
type windowSession struct {
	*state.State
	acks chan packets.ControlPacket
}

func (w windowSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	if p.Type() == packets.PUBLISH {
		resp = w.acks
	}
	return w.State.AddToSession(ctx, p, resp)
}

// publisher is one publishing client and what it achieved.
type publisher struct {
	index   int
	ep      endpoint
	client  *paho.Client
	session *state.State
	acks    chan packets.ControlPacket

	published atomic.Int64 // acknowledged (QoS 0: written)
	errors    atomic.Int64
	start     time.Time
	end       time.Time
}

func connectPublisher(ctx context.Context, index int, ep endpoint, window int) (*publisher, error) {
	p := &publisher{
		index:   index,
		ep:      ep,
		session: state.NewInMemory(),
		// Room for every message of the window: paho sends completions
		// while holding its session lock, so this channel must never be full.
		acks: make(chan packets.ControlPacket, window),
	}
	cfg := paho.ClientConfig{Session: windowSession{State: p.session, acks: p.acks}}
	c, err := connectClient(ctx, ep, cfg, publisherReceiveMaximum)
	if err != nil {
		_ = p.session.Close()
		return nil, err
	}
	p.client = c
	return p, nil
}

func (p *publisher) close() (lost bool) {
	lost = closeClient(p.client)
	_ = p.session.Close() // paho does not close a session it was given
	return lost
}

// publishConfig is what every publisher of a run shares.
type publishConfig struct {
	runID    uint64
	messages int
	size     int
	qos      byte
	window   int
	ackWait  time.Duration
}

// run publishes every message in sequence order, keeping up to window of
// them unacknowledged, and returns when all are acknowledged, the
// connection is gone, or ctx is done.
func (p *publisher) run(ctx context.Context, cfg publishConfig) {
	p.start = time.Now()
	defer func() { p.end = time.Now() }()
	ackTimer := time.NewTimer(cfg.ackWait)
	defer ackTimer.Stop()
	inflight := 0
	for seq := range cfg.messages {
		for cfg.qos > 0 && inflight >= cfg.window {
			if err := p.awaitAck(ctx, ackTimer, cfg.ackWait); err != nil {
				p.giveUp(ctx, inflight+cfg.messages-seq)
				return
			}
			inflight--
		}
		if ctx.Err() != nil {
			return
		}
		stored, err := p.publish(ctx, cfg, seq)
		switch {
		case stored:
			inflight++
		case err != nil:
			// Without reconnects a failed publish means a dead connection
			// (or arguments no message would pass): the rest would fail one
			// by one, which takes long for a big run. Count them now.
			p.giveUp(ctx, cfg.messages-seq)
			p.drain(ctx, cfg, ackTimer, inflight)
			return
		default:
			p.published.Add(1)
		}
	}
	p.drain(ctx, cfg, ackTimer, inflight)
}

// drain waits for the completions of the messages still in flight.
func (p *publisher) drain(ctx context.Context, cfg publishConfig, ackTimer *time.Timer, inflight int) {
	for ; inflight > 0; inflight-- {
		if err := p.awaitAck(ctx, ackTimer, cfg.ackWait); err != nil {
			p.giveUp(ctx, inflight)
			return
		}
	}
}

// publish sends message seq; stored says a completion will follow (or the
// connection's end: QoS 1/2 messages that reached the session).
func (p *publisher) publish(ctx context.Context, cfg publishConfig, seq int) (stored bool, err error) {
	payload := encodePayload(header{
		RunID:     cfg.runID,
		Publisher: uint32(p.index),
		Sequence:  uint32(seq),
		SentAt:    time.Now().UnixNano(),
	}, cfg.size)
	_, err = p.client.PublishWithOptions(ctx, &paho.Publish{Topic: p.ep.Topic, QoS: cfg.qos, Payload: payload},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if cfg.qos == 0 {
		return false, err
	}
	// A failed write after the message entered the session still ends in a
	// completion or in the client shutting down; awaitAck handles both.
	return err == nil || errors.Is(err, paho.ErrNetworkErrorAfterStored), err
}

// awaitAck waits for one completion and counts its outcome.
func (p *publisher) awaitAck(ctx context.Context, timer *time.Timer, wait time.Duration) error {
	// A completion already queued wins over a connection that has just
	// ended: select alone would pick between them at random.
	select {
	case cp := <-p.acks:
		p.countAck(cp)
		return nil
	default:
	}
	timer.Reset(wait)
	select {
	case cp := <-p.acks:
		p.countAck(cp)
		return nil
	case <-p.client.Done():
		return paho.ErrConnectionLost
	case <-timer.C:
		return errPublisherStalled
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *publisher) countAck(cp packets.ControlPacket) {
	if ackSucceeded(cp) {
		p.published.Add(1)
	} else {
		p.errors.Add(1)
	}
}

// giveUp counts the messages a dead connection will never deliver; a
// cancelled run counts nothing, it was stopped on purpose.
func (p *publisher) giveUp(ctx context.Context, undone int) {
	if ctx.Err() == nil {
		p.errors.Add(int64(undone))
	}
}

// ackSucceeded tells a successful completion from a failed one: paho sends
// an empty packet when it drops the message, a PUBREC only when it carries
// an error, and the broker puts errors in reason codes >= 0x80.
func ackSucceeded(cp packets.ControlPacket) bool {
	switch c := cp.Content.(type) {
	case *packets.Puback:
		return c.ReasonCode < 0x80
	case *packets.Pubcomp:
		return c.ReasonCode < 0x80
	default:
		return false
	}
}
