// Package session owns the agent's lean MQTT v5 session with its local
// Mosquitto broker: the high-rate data path. It is built directly on the
// paho.golang packets codec because paho's client writes one syscall per
// packet and gives asynchronous publishes no completion (docs: CLIENTS.md).
//
// One reader goroutine decodes packets; one writer goroutine owns a 64 KiB
// buffered writer flushed only when it has nothing more queued; a watchdog
// goroutine keeps the connection alive. Publishes are queued in call order
// and written under the broker's Receive Maximum, each completing through its
// own callback. Inbound deliveries are acknowledged in arrival order.
// PUBLISH and its acknowledgements are framed by the session itself (frame.go,
// checked against the codec by fuzzing); the codec does everything else.
package session

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Config describes one session with a broker.
type Config struct {
	Addr           string // broker host:port
	ClientID       string
	Username       string
	Password       string
	TLS            *tls.Config // nil: plain TCP
	CleanStart     bool
	SessionExpiry  uint32        // seconds; the agent's data session uses a long expiry + CleanStart false
	KeepAlive      uint16        // seconds; default 30 when 0
	ReceiveMaximum uint16        // advertised to the broker; default 65535 when 0
	ConnectTimeout time.Duration // default 10s when 0
	Logger         *slog.Logger  // default slog.Default() when nil
	// Dialed, if set, is called with the connection's local address once
	// it is open and before CONNECT is sent: the broker's connect line for
	// this session comes after it.
	Dialed func(local net.Addr)
}

const (
	defaultKeepAlive      = 30
	defaultReceiveMaximum = 65535
	defaultConnectTimeout = 10 * time.Second
	bufferSize            = 64 << 10
	// maxWindow keeps a few packet ids free for SUBSCRIBE and UNSUBSCRIBE
	// even when the broker's Receive Maximum is 65535.
	maxWindow = 65000
	// closeFlushTimeout bounds how long Close waits for DISCONNECT to be written.
	closeFlushTimeout = 2 * time.Second
)

// ErrClosed completes whatever was still pending when the session was closed
// with Close, and any Publish after that.
var ErrClosed = errors.New("session: closed")

// errKeepAlive ends a session whose broker went silent.
var errKeepAlive = errors.New("session: keep alive timeout: no packet from broker")

// RefusedError is returned by Dial when CONNACK carries a reason code >= 0x80.
type RefusedError struct{ Code byte }

func (e *RefusedError) Error() string {
	return "session: broker refused connect: " + reasonString(e.Code)
}

// Stats are counters for metrics.
type Stats struct {
	PublishesSent      uint64 // PUBLISH packets written
	PublishesAcked     uint64 // QoS 1/2 publishes the broker accepted (PUBACK / PUBCOMP below 0x80)
	DeliveriesReceived uint64 // inbound PUBLISH packets
	AcksSent           uint64 // PUBACK / PUBREC written for inbound deliveries
	InFlight           int    // QoS 1/2 publishes written and not yet completed
	Queued             int    // publishes waiting to be written
}

// Session is one MQTT v5 connection to a broker. Its methods are safe for
// concurrent use.
type Session struct {
	log            *slog.Logger
	conn           net.Conn
	br             *bufio.Reader
	bw             *bufio.Writer // owned by the writer goroutine after Dial
	handler        Handler
	sessionPresent bool
	serverRecvMax  uint16
	window         int           // QoS 1/2 publishes allowed in flight
	maxQoS         byte          // highest QoS the broker accepts
	maxPacket      uint32        // largest packet the broker accepts; 0: no limit
	keepAlive      time.Duration // 0: disabled

	mu        sync.Mutex
	closing   bool  // Close was called: queue DISCONNECT, fail the rest with ErrClosed
	ended     bool  // the connection is over: nothing more is written
	endErr    error // why it ended; nil after a clean Close
	queue     []*outbound
	control   []control
	inflight  map[uint16]*outbound
	requests  map[uint16]*request
	nextID    uint16
	arrivals  []arrival // inbound QoS 1/2 deliveries not yet acknowledged to the broker
	arrivedN  uint64    // arrival number of arrivals[0]
	wakeUp    chan struct{}
	stop      chan struct{} // closed when the session ends
	done      chan struct{} // closed once everything pending was completed
	closeOnce sync.Once
	wg        sync.WaitGroup

	readCount  atomic.Uint64 // packets read, for the keepalive watchdog
	writeCount atomic.Uint64 // flushes, for the keepalive watchdog
	sent       atomic.Uint64
	acked      atomic.Uint64
	received   atomic.Uint64
	acksSent   atomic.Uint64
}

// Dial connects to the broker, sends CONNECT and waits for CONNACK. ctx
// bounds the dial and the handshake only; the session then lives until Close
// or until the connection fails. h receives every inbound PUBLISH (nil: each
// delivery is acknowledged at once).
func Dial(ctx context.Context, cfg Config, h Handler) (*Session, error) {
	cfg = withDefaults(cfg)
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	conn, err := dialConn(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("session: dial %s: %w", cfg.Addr, err)
	}
	if cfg.Dialed != nil {
		cfg.Dialed(conn.LocalAddr())
	}
	s := newSession(cfg, conn, h)
	if err := s.handshake(ctx, cfg); err != nil {
		conn.Close()
		return nil, err
	}
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.watchdog()
	return s, nil
}

func withDefaults(cfg Config) Config {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = defaultReceiveMaximum
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

func dialConn(ctx context.Context, cfg Config) (net.Conn, error) {
	if cfg.TLS != nil {
		d := tls.Dialer{Config: cfg.TLS}
		return d.DialContext(ctx, "tcp", cfg.Addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", cfg.Addr)
}

func newSession(cfg Config, conn net.Conn, h Handler) *Session {
	return &Session{
		log:       cfg.Logger.With("client", cfg.ClientID),
		conn:      conn,
		br:        bufio.NewReaderSize(conn, bufferSize),
		bw:        bufio.NewWriterSize(conn, bufferSize),
		handler:   h,
		keepAlive: time.Duration(cfg.KeepAlive) * time.Second,
		inflight:  make(map[uint16]*outbound),
		requests:  make(map[uint16]*request),
		wakeUp:    make(chan struct{}, 1),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

// handshake sends CONNECT and reads CONNACK before any goroutine runs.
func (s *Session) handshake(ctx context.Context, cfg Config) error {
	// Unblock the CONNACK read when ctx ends (deadline or cancel).
	stopWatch := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stopWatch()
	if _, err := connectPacket(cfg).WriteTo(s.conn); err != nil {
		return fmt.Errorf("session: send connect: %w", handshakeErr(ctx, err))
	}
	cp, err := packets.ReadPacket(s.br)
	if err != nil {
		return fmt.Errorf("session: read connack: %w", handshakeErr(ctx, err))
	}
	connack, ok := cp.Content.(*packets.Connack)
	if !ok {
		return fmt.Errorf("session: expected CONNACK, got %s", cp.PacketType())
	}
	if connack.ReasonCode >= 0x80 {
		return &RefusedError{Code: connack.ReasonCode}
	}
	if !stopWatch() {
		return fmt.Errorf("session: connect: %w", context.Cause(ctx))
	}
	s.conn.SetDeadline(time.Time{})
	s.applyConnack(connack)
	return nil
}

// handshakeErr prefers the context's reason over the i/o timeout it caused.
func handshakeErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

func connectPacket(cfg Config) *packets.Connect {
	recvMax := cfg.ReceiveMaximum
	expiry := cfg.SessionExpiry
	c := &packets.Connect{
		ProtocolName:    "MQTT",
		ProtocolVersion: 5,
		ClientID:        cfg.ClientID,
		CleanStart:      cfg.CleanStart,
		KeepAlive:       cfg.KeepAlive,
		Properties:      &packets.Properties{ReceiveMaximum: &recvMax},
	}
	if expiry > 0 {
		c.Properties.SessionExpiryInterval = &expiry
	}
	if cfg.Username != "" {
		c.UsernameFlag, c.Username = true, cfg.Username
	}
	if cfg.Password != "" {
		c.PasswordFlag, c.Password = true, []byte(cfg.Password)
	}
	return c
}

// applyConnack records the limits the broker announced [MQTT-3.2.2.3].
func (s *Session) applyConnack(c *packets.Connack) {
	s.sessionPresent = c.SessionPresent
	s.serverRecvMax, s.maxQoS = 65535, 2
	p := c.Properties
	if p == nil {
		p = &packets.Properties{}
	}
	if p.ReceiveMaximum != nil && *p.ReceiveMaximum > 0 {
		s.serverRecvMax = *p.ReceiveMaximum
	}
	s.window = min(int(s.serverRecvMax), maxWindow)
	if p.MaximumQOS != nil {
		s.maxQoS = *p.MaximumQOS
	}
	if p.MaximumPacketSize != nil {
		s.maxPacket = *p.MaximumPacketSize
	}
	if p.ServerKeepAlive != nil { // the broker's value wins [MQTT-3.2.2-21]
		s.keepAlive = time.Duration(*p.ServerKeepAlive) * time.Second
	}
}

// SessionPresent reports whether the broker resumed an existing session.
func (s *Session) SessionPresent() bool { return s.sessionPresent }

// ServerReceiveMaximum is the broker's Receive Maximum from CONNACK (65535 when absent).
func (s *Session) ServerReceiveMaximum() uint16 { return s.serverRecvMax }

// Done is closed when the connection ended (error or Close), after every
// pending completion was called.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err tells why the session ended: nil while it runs and after a clean Close.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endErr
}

// Stats returns the session's counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	inflight, queued := len(s.inflight), len(s.queue)
	s.mu.Unlock()
	return Stats{
		PublishesSent:      s.sent.Load(),
		PublishesAcked:     s.acked.Load(),
		DeliveriesReceived: s.received.Load(),
		AcksSent:           s.acksSent.Load(),
		InFlight:           inflight,
		Queued:             queued,
	}
}

// Close sends DISCONNECT (reason 0) best-effort after the acknowledgements
// already released, closes the connection and waits for the session's
// goroutines. Queued and in-flight publishes complete with ErrClosed. Safe to
// call twice; must not be called from a completion or a Handler.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		if !s.ended {
			s.control = append(s.control, control{kind: packets.DISCONNECT})
		}
		s.mu.Unlock()
		s.wake()
		select {
		case <-s.stop: // the writer sent DISCONNECT and ended the session
		case <-time.After(closeFlushTimeout):
			s.end(ErrClosed)
		}
	})
	s.wg.Wait()
	return nil
}

// end records why the session ended, closes the connection and stops the
// goroutines. The writer then completes everything pending. Idempotent.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if !s.closing {
		s.endErr = err
		s.log.Debug("broker session ended", "err", err) // the owner reads it from Err
	}
	s.mu.Unlock()
	s.conn.Close()
	close(s.stop)
}

// failAll completes every queued and in-flight publish and every pending
// request with the session's end error, then closes Done. Called once, by
// the writer goroutine as it exits.
func (s *Session) failAll() {
	s.mu.Lock()
	err := s.endErr
	if err == nil {
		err = ErrClosed
	}
	queued, inflight, requests := s.queue, s.inflight, s.requests
	s.queue, s.inflight, s.requests = nil, map[uint16]*outbound{}, map[uint16]*request{}
	s.control, s.arrivals = nil, nil
	s.mu.Unlock()
	for _, o := range queued {
		o.complete(err)
	}
	for _, o := range inflight {
		o.complete(err)
	}
	for _, r := range requests {
		r.finish(nil, err)
	}
	close(s.done)
}

// wake tells the writer there is something to write.
func (s *Session) wake() {
	select {
	case s.wakeUp <- struct{}{}:
	default:
	}
}
