package session

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/packets"
)

// Subscription is one topic filter with its MQTT v5 subscription options.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	// ID is the subscription identifier the broker puts on every message
	// this subscription delivers (MQTT v5 3.8.2.1.2); 0 for none. One
	// SUBSCRIBE carries one identifier: every subscription of a Subscribe
	// call must have the same ID.
	ID uint32
}

// maxSubscriptionID is the largest subscription identifier (a four-byte
// variable byte integer).
const maxSubscriptionID = 268_435_455

// request is a SUBSCRIBE or UNSUBSCRIBE waiting for its acknowledgement.
type request struct {
	kind   byte // packets.SUBSCRIBE or packets.UNSUBSCRIBE
	result chan requestResult
}

type requestResult struct {
	reasons []byte
	err     error
}

func (r *request) finish(reasons []byte, err error) {
	r.result <- requestResult{reasons: reasons, err: err} // buffered: never blocks
}

// readLoop decodes packets until the connection fails.
func (s *Session) readLoop() {
	defer s.wg.Done()
	var f frame
	for {
		if err := s.readOne(&f); err != nil {
			s.end(err)
			return
		}
	}
}

// readOne reads and processes one packet. An error ends the session.
func (s *Session) readOne(f *frame) error {
	first, err := s.br.Peek(1)
	if err != nil {
		return fmt.Errorf("session: connection lost: %w", err)
	}
	if !isDataPath(first[0]) {
		if err := checkRemainingLength(s.br); err != nil {
			return err
		}
		cp, err := packets.ReadPacket(s.br)
		if err != nil {
			return fmt.Errorf("session: read: %w", err)
		}
		s.readCount.Add(1)
		return s.handle(cp)
	}
	if err := readFrame(s.br, f); err != nil {
		if errors.Is(err, errMalformed) {
			return err
		}
		return fmt.Errorf("session: connection lost: %w", err)
	}
	s.readCount.Add(1)
	switch f.kind {
	case packets.PUBLISH:
		return s.onPublish(&f.pub, f.subID)
	case packets.PUBACK:
		return s.onPuback(f.id, f.reason)
	case packets.PUBREC:
		return s.onPubrec(f.id, f.reason)
	case packets.PUBREL:
		s.onPubrel(f.id)
		return nil
	default:
		return s.onPubcomp(f.id, f.reason)
	}
}

// checkRemainingLength refuses a Remaining Length of more than four bytes
// before the codec sees it: packets.ReadPacket decodes any number of bytes
// and would try to allocate up to 4 GiB for the garbage value. Peeking one
// byte at a time never waits for bytes a valid packet would not have.
func checkRemainingLength(br *bufio.Reader) error {
	for i := 1; i <= 4; i++ {
		b, err := br.Peek(i + 1)
		if err != nil {
			return fmt.Errorf("session: connection lost: %w", err)
		}
		if b[i]&0x80 == 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: remaining length longer than 4 bytes", errMalformed)
}

// handle processes a packet other than PUBLISH and its acknowledgements.
func (s *Session) handle(cp *packets.ControlPacket) error {
	switch p := cp.Content.(type) {
	case *packets.Suback:
		return s.onRequestAck(packets.SUBACK, p.PacketID, p.Reasons)
	case *packets.Unsuback:
		return s.onRequestAck(packets.UNSUBACK, p.PacketID, p.Reasons)
	case *packets.Pingresp:
		return nil
	case *packets.Disconnect:
		return brokerDisconnect(p)
	default:
		return fmt.Errorf("%w: unexpected %s from broker", errProtocol, cp.PacketType())
	}
}

func brokerDisconnect(p *packets.Disconnect) error {
	msg := "session: broker disconnected: " + reasonString(p.ReasonCode)
	if p.Properties != nil && p.Properties.ReasonString != "" {
		msg += ": " + p.Properties.ReasonString
	}
	return errors.New(msg)
}

// Subscribe sends one SUBSCRIBE and waits for SUBACK. It returns an error if
// any reason code is >= 0x80.
func (s *Session) Subscribe(ctx context.Context, subs ...Subscription) error {
	if len(subs) == 0 {
		return errors.New("session: subscribe: no subscriptions")
	}
	pkt := &packets.Subscribe{Subscriptions: make([]packets.SubOptions, len(subs))}
	for i, sub := range subs {
		if err := validateSubscription(sub); err != nil {
			return err
		}
		if sub.ID != subs[0].ID {
			return errors.New("session: subscribe: one SUBSCRIBE carries one subscription identifier")
		}
		pkt.Subscriptions[i] = packets.SubOptions{
			Topic:             sub.Filter,
			QoS:               sub.QoS,
			RetainHandling:    sub.RetainHandling,
			NoLocal:           sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished,
		}
	}
	if id := subs[0].ID; id != 0 {
		if id > maxSubscriptionID {
			return fmt.Errorf("session: subscribe: subscription identifier %d over %d", id, maxSubscriptionID)
		}
		n := int(id)
		pkt.Properties = &packets.Properties{SubscriptionIdentifier: &n}
	}
	reasons, err := s.request(ctx, packets.SUBSCRIBE, func(id uint16) *packets.ControlPacket {
		pkt.PacketID = id
		return &packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.SUBSCRIBE, Flags: 2}, Content: pkt}
	})
	if err != nil {
		return fmt.Errorf("session: subscribe: %w", err)
	}
	return checkReasons("subscribe", reasons, len(subs))
}

// Unsubscribe sends one UNSUBSCRIBE and waits for UNSUBACK. It returns an
// error if any reason code is >= 0x80.
func (s *Session) Unsubscribe(ctx context.Context, filters ...string) error {
	if len(filters) == 0 {
		return errors.New("session: unsubscribe: no filters")
	}
	for _, f := range filters {
		if err := validateFilter(f); err != nil {
			return err
		}
	}
	pkt := &packets.Unsubscribe{Topics: filters}
	reasons, err := s.request(ctx, packets.UNSUBSCRIBE, func(id uint16) *packets.ControlPacket {
		pkt.PacketID = id
		return &packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.UNSUBSCRIBE, Flags: 2}, Content: pkt}
	})
	if err != nil {
		return fmt.Errorf("session: unsubscribe: %w", err)
	}
	return checkReasons("unsubscribe", reasons, len(filters))
}

var errInvalidSubscription = errors.New("session: invalid subscription")

func validateSubscription(sub Subscription) error {
	if sub.QoS > 2 || sub.RetainHandling > 2 {
		return fmt.Errorf("%w: %q: qos %d, retain handling %d", errInvalidSubscription, sub.Filter, sub.QoS, sub.RetainHandling)
	}
	return validateFilter(sub.Filter)
}

func validateFilter(f string) error {
	if f == "" || len(f) > maxString || !utf8.ValidString(f) {
		return fmt.Errorf("%w: filter %q", errInvalidSubscription, f)
	}
	return nil
}

func checkReasons(what string, reasons []byte, want int) error {
	if len(reasons) != want {
		return fmt.Errorf("%w: %s: %d reason codes for %d filters", errProtocol, what, len(reasons), want)
	}
	for _, code := range reasons {
		if code >= 0x80 {
			return &reasonError{what: what, code: code}
		}
	}
	return nil
}

// refusalLocked is the error a new publish or request gets once the session
// is ending (its cause, or ErrClosed), nil while it runs. s.mu is held.
func (s *Session) refusalLocked() error {
	switch {
	case !s.ended && !s.closing:
		return nil
	case s.endErr != nil:
		return s.endErr
	default:
		return ErrClosed
	}
}

// request sends the packet build makes for a fresh packet id and waits for
// its acknowledgement, ctx, or the end of the session.
func (s *Session) request(ctx context.Context, kind byte, build func(id uint16) *packets.ControlPacket) ([]byte, error) {
	r := &request{kind: kind, result: make(chan requestResult, 1)}
	s.mu.Lock()
	if err := s.refusalLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	id, ok := s.allocID()
	if !ok {
		s.mu.Unlock()
		return nil, errors.New("no free packet id")
	}
	s.requests[id] = r
	s.control = append(s.control, control{kind: kind, pkt: build(id)})
	s.mu.Unlock()
	s.wake()
	select {
	case res := <-r.result:
		return res.reasons, res.err
	case <-ctx.Done():
		s.mu.Lock()
		if s.requests[id] == r {
			delete(s.requests, id)
		}
		s.mu.Unlock()
		return nil, context.Cause(ctx)
	}
}

// onRequestAck completes the SUBSCRIBE or UNSUBSCRIBE with this packet id.
func (s *Session) onRequestAck(ackKind byte, id uint16, reasons []byte) error {
	s.mu.Lock()
	r := s.requests[id]
	if r != nil {
		delete(s.requests, id)
	}
	s.mu.Unlock()
	if r == nil {
		s.log.Debug("acknowledgement for unknown request", "id", id)
		return nil
	}
	if r.kind+1 != ackKind { // SUBACK follows SUBSCRIBE, UNSUBACK follows UNSUBSCRIBE
		err := fmt.Errorf("%w: acknowledgement of the wrong kind for packet id %d", errProtocol, id)
		r.finish(nil, err)
		return err
	}
	r.finish(reasons, nil)
	return nil
}
