package session

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/message"
)

// Handler receives each inbound PUBLISH, in arrival order, on the session's
// reader goroutine. It must not block (queue the delivery elsewhere): the
// reader also processes the acks of our own publishes.
type Handler func(d *Delivery)

// Delivery is one inbound PUBLISH.
type Delivery struct {
	Message message.Message // topic, payload, QoS, retain flag, v5 properties
	// SubID is the subscription identifier the broker sent with the
	// message (the subscription that matched it); 0 when none.
	SubID uint32

	id    uint16 // packet id (QoS 1/2)
	qos   byte
	seq   uint64 // arrival number among this session's QoS 1/2 deliveries
	s     *Session
	acked atomic.Bool
}

// arrival is a QoS 1/2 delivery whose acknowledgement has not been released.
type arrival struct {
	id    uint16
	qos   byte
	acked bool // Ack was called; waits for every earlier arrival
}

var errProtocol = errors.New("session: protocol error")

// Ack marks the delivery as handled. Safe from any goroutine, at most once
// (later calls are no-ops); a no-op for QoS 0. The session sends PUBACK (QoS
// 1) / PUBREC (QoS 2) in arrival order: an acknowledgement waits until every
// earlier QoS 1/2 delivery was acked too [MQTT-4.6.0-2], and they are written
// in batches. The broker's PUBREL is answered with PUBCOMP immediately.
func (d *Delivery) Ack() {
	if d.s == nil || d.qos == 0 || d.acked.Swap(true) {
		return
	}
	d.s.ack(d.seq)
}

// ack marks arrival seq as handled and releases the acknowledgements of the
// longest handled prefix of the arrival queue.
func (s *Session) ack(seq uint64) {
	s.mu.Lock()
	i := seq - s.arrivedN // wraps to a huge value for an already released arrival
	if s.ended || i >= uint64(len(s.arrivals)) {
		s.mu.Unlock()
		return
	}
	s.arrivals[i].acked = true
	n := 0
	for n < len(s.arrivals) && s.arrivals[n].acked {
		a := s.arrivals[n]
		kind := byte(packets.PUBACK)
		if a.qos == 2 {
			kind = packets.PUBREC
		}
		s.control = append(s.control, control{kind: kind, id: a.id})
		n++
	}
	s.arrivals = s.arrivals[n:]
	s.arrivedN += uint64(n)
	s.mu.Unlock()
	if n > 0 {
		s.wake()
	}
}

// onPublish hands an inbound PUBLISH to the handler.
func (s *Session) onPublish(p *packets.Publish, subID uint32) error {
	if err := checkInbound(p); err != nil {
		return err
	}
	s.received.Add(1)
	d := &Delivery{
		Message: message.Message{
			Topic:   p.Topic,
			Payload: p.Payload,
			QoS:     p.QoS,
			Retain:  p.Retain,
			Props:   fromPacketProps(p.Properties),
		},
		SubID: subID,
		id:    p.PacketID,
		qos:   p.QoS,
		s:     s,
	}
	if p.Properties != nil && p.Properties.SubscriptionIdentifier != nil {
		d.SubID = uint32(*p.Properties.SubscriptionIdentifier)
	}
	if p.QoS > 0 {
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return nil
		}
		d.seq = s.arrivedN + uint64(len(s.arrivals))
		s.arrivals = append(s.arrivals, arrival{id: p.PacketID, qos: p.QoS})
		s.mu.Unlock()
	}
	if s.handler == nil {
		d.Ack()
		return nil
	}
	s.handler(d)
	return nil
}

// checkInbound refuses a PUBLISH this session cannot have been sent.
func checkInbound(p *packets.Publish) error {
	switch {
	case p.QoS > 2:
		return fmt.Errorf("%w: publish with qos 3", errProtocol)
	case p.QoS > 0 && p.PacketID == 0:
		return fmt.Errorf("%w: publish without packet id", errProtocol)
	case p.Properties != nil && p.Properties.TopicAlias != nil:
		// The session advertises no Topic Alias Maximum, so none may come [MQTT-3.3.2-9].
		return fmt.Errorf("%w: topic alias not negotiated", errProtocol)
	case p.Topic == "":
		return fmt.Errorf("%w: publish without topic", errProtocol)
	}
	return nil
}

// onPubrel completes the broker's QoS 2 delivery: PUBCOMP at once, whether or
// not this connection saw the PUBLISH (it may predate a reconnect).
func (s *Session) onPubrel(id uint16) {
	s.queueControl(control{kind: packets.PUBCOMP, id: id})
}

// queueControl hands a control packet to the writer.
func (s *Session) queueControl(c control) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.control = append(s.control, c)
	s.mu.Unlock()
	s.wake()
}
