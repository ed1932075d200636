package session

import (
	"fmt"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/message"
)

// outbound is one Publish call on its way to the broker.
type outbound struct {
	msg  message.Message
	done func(error)
	err  error  // refused before sending: completed in order, never written
	id   uint16 // packet id while in flight (QoS 1/2)
}

func (o *outbound) complete(err error) {
	if o.done != nil {
		o.done(err)
	}
}

// Publish queues m and returns at once: it never blocks on the network.
// Messages are written in the order Publish was called. At most the broker's
// Receive Maximum of QoS 1/2 publishes are in flight (Mosquitto 2.0.11 drops
// QoS 2 beyond it with PUBREC 0x97); later messages of any QoS wait behind
// them, in order.
//
// done (may be nil) is called exactly once and must not block: QoS 0 after
// the packet was written, QoS 1 on PUBACK, QoS 2 on PUBCOMP. It gets an error
// naming the reason code when the broker refuses the message (0x10 "no
// matching subscribers" is success), the connection error (or ErrClosed)
// when the session ends first. It is called from a session goroutine, except
// when the session had already ended: then it is called before Publish
// returns.
func (s *Session) Publish(m message.Message, done func(error)) {
	o := &outbound{msg: m, done: done, err: s.check(&m)}
	s.mu.Lock()
	if err := s.refusalLocked(); err != nil {
		s.mu.Unlock()
		o.complete(err)
		return
	}
	s.queue = append(s.queue, o)
	s.mu.Unlock()
	s.wake()
}

// check refuses a message the broker would not take: a malformed one would
// make it close the connection, and everything in flight with it.
func (s *Session) check(m *message.Message) error {
	if err := validateMessage(m); err != nil {
		return err
	}
	if m.QoS > s.maxQoS {
		return fmt.Errorf("%w: qos %d above the broker's maximum %d", errInvalidMessage, m.QoS, s.maxQoS)
	}
	limit := 1 + 4 + maxRemainingLength // what MQTT can frame at all
	if s.maxPacket > 0 {
		limit = min(limit, int(s.maxPacket))
	}
	if n := publishSize(m); n > limit {
		return fmt.Errorf("%w: packet of %d bytes above the maximum %d", errInvalidMessage, n, limit)
	}
	return nil
}

// publishSize is the encoded size of m as a PUBLISH packet.
func publishSize(m *message.Message) int {
	props := 0
	p := &m.Props
	if p.PayloadFormat != nil {
		props += 2
	}
	if p.MessageExpiry != nil {
		props += 5
	}
	if p.ContentType != "" {
		props += 3 + len(p.ContentType)
	}
	if p.ResponseTopic != "" {
		props += 3 + len(p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		props += 3 + len(p.CorrelationData)
	}
	for _, u := range p.User {
		props += 5 + len(u.Key) + len(u.Value)
	}
	rest := 2 + len(m.Topic) + vbiSize(props) + props + len(m.Payload)
	if m.QoS > 0 {
		rest += 2
	}
	return 1 + vbiSize(rest) + rest
}

// vbiSize is the length of n as a variable byte integer.
func vbiSize(n int) int {
	size := 1
	for n >= 128 {
		n >>= 7
		size++
	}
	return size
}

// allocID returns a packet id in use by no in-flight publish nor pending
// request (ids 1..65535 [MQTT-2.2.1-3]). Called with s.mu held.
func (s *Session) allocID() (uint16, bool) {
	for range 65535 {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; used {
			continue
		}
		if _, used := s.requests[s.nextID]; used {
			continue
		}
		return s.nextID, true
	}
	return 0, false
}

// onPuback completes a QoS 1 publish.
func (s *Session) onPuback(id uint16, reason byte) error {
	o, err := s.inflightFor(id, 1, "PUBACK")
	if o == nil {
		return err
	}
	s.finishPublish(o, reason)
	return nil
}

// onPubrec answers a QoS 2 publish's PUBREC with PUBREL, or completes it
// when the broker refused it (then the id is free again [MQTT-4.3.3-4]).
func (s *Session) onPubrec(id uint16, reason byte) error {
	o, err := s.inflightFor(id, 2, "PUBREC")
	if o == nil {
		return err
	}
	if reason >= 0x80 {
		s.finishPublish(o, reason)
		return nil
	}
	s.queueControl(control{kind: packets.PUBREL, id: id})
	return nil
}

// onPubcomp completes a QoS 2 publish.
func (s *Session) onPubcomp(id uint16, reason byte) error {
	o, err := s.inflightFor(id, 2, "PUBCOMP")
	if o == nil {
		return err
	}
	s.finishPublish(o, reason)
	return nil
}

// inflightFor finds the publish an acknowledgement is for. An unknown id is
// logged and ignored; an acknowledgement of the wrong kind is a protocol error.
func (s *Session) inflightFor(id uint16, qos byte, kind string) (*outbound, error) {
	s.mu.Lock()
	o := s.inflight[id]
	s.mu.Unlock()
	if o == nil {
		s.log.Debug("acknowledgement for unknown packet id", "packet", kind, "id", id)
		return nil, nil
	}
	if o.msg.QoS != qos {
		return nil, fmt.Errorf("%w: %s for a qos %d publish", errProtocol, kind, o.msg.QoS)
	}
	return o, nil
}

// finishPublish removes a publish from the in-flight table, completes it and
// lets the writer use the freed slot.
func (s *Session) finishPublish(o *outbound, code byte) {
	s.mu.Lock()
	if s.inflight[o.id] != o { // failAll got it first
		s.mu.Unlock()
		return
	}
	delete(s.inflight, o.id)
	s.mu.Unlock()
	s.wake()
	if code >= 0x80 {
		o.complete(&reasonError{what: "publish", code: code})
		return
	}
	s.acked.Add(1)
	o.complete(nil)
}
