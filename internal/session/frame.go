package session

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/message"
)

// The data path's packets — PUBLISH and its four acknowledgements — are
// framed here; the codec still decodes and encodes their properties and
// handles every other packet. Measured on this machine, packets.ReadPacket
// allocates about 4.6 KB per packet (bytes.Buffer.ReadFrom grows by 512 bytes
// at least, twice per PUBLISH) and Publish.WriteTo five buffers per message:
// a third of the session's CPU at 30k msg/s. The fuzz tests compare this
// framing with the codec's byte for byte.

// maxRemainingLength is the largest MQTT Remaining Length (four VBI bytes).
const maxRemainingLength = 268435455

var errMalformed = errors.New("session: malformed packet")

// frame is one decoded data-path packet.
type frame struct {
	kind   byte // packets.PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP
	id     uint16
	reason byte
	pub    packets.Publish // kind PUBLISH
	// subID is pub's subscription identifier when it was the only property
	// (decoded here: pub.Properties is then nil); 0 otherwise.
	subID uint32
}

// isDataPath tells whether the fixed header's first byte starts a packet
// readFrame decodes.
func isDataPath(first byte) bool {
	switch first >> 4 {
	case packets.PUBLISH, packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP:
		return true
	}
	return false
}

// readFrame reads one data-path packet (isDataPath of its first byte holds).
func readFrame(br *bufio.Reader, f *frame) error {
	first, err := br.ReadByte()
	if err != nil {
		return err
	}
	n, err := readVBI(br)
	if err != nil {
		return err
	}
	f.kind = first >> 4
	if f.kind == packets.PUBLISH {
		return readPublish(br, first, n, &f.pub, &f.subID)
	}
	return readAck(br, n, f)
}

// readVBI reads a Remaining Length.
func readVBI(br *bufio.Reader) (int, error) {
	n, shift := 0, 0
	for i := 0; i < 4; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			return n, nil
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: remaining length longer than 4 bytes", errMalformed)
}

// readAck decodes PUBACK, PUBREC, PUBREL or PUBCOMP: packet id, then reason
// code and properties when present [MQTT-3.4.2].
func readAck(br *bufio.Reader, n int, f *frame) error {
	if n < 2 {
		return fmt.Errorf("%w: acknowledgement of %d bytes", errMalformed, n)
	}
	if n <= 3 { // no properties: read in place, nothing allocated
		var b [3]byte
		if _, err := io.ReadFull(br, b[:n]); err != nil {
			return err
		}
		f.id, f.reason = uint16(b[0])<<8|uint16(b[1]), 0
		if n == 3 {
			f.reason = b[2]
		}
		return nil
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return err
	}
	f.id, f.reason = uint16(body[0])<<8|uint16(body[1]), body[2]
	// Properties (reason string, user properties) are only validated: nothing uses them.
	var props packets.Properties
	if err := props.Unpack(bytes.NewBuffer(body[3:]), packets.PUBACK); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	return nil
}

// readPublish decodes a PUBLISH body of n bytes into p with one allocation
// for the body (the payload aliases it) and one for the topic. A property
// section holding only a subscription identifier goes to subID instead.
func readPublish(br *bufio.Reader, first byte, n int, p *packets.Publish, subID *uint32) error {
	*subID = 0
	*p = packets.Publish{
		QoS:       (first >> 1) & 3,
		Duplicate: first&0x08 != 0,
		Retain:    first&0x01 != 0,
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return err
	}
	if len(body) < 2 {
		return fmt.Errorf("%w: publish without topic length", errMalformed)
	}
	topicEnd := 2 + (int(body[0])<<8 | int(body[1]))
	if topicEnd > len(body) {
		return fmt.Errorf("%w: topic longer than the packet", errMalformed)
	}
	p.Topic = string(body[2:topicEnd])
	rest := body[topicEnd:]
	if p.QoS > 0 {
		if len(rest) < 2 {
			return fmt.Errorf("%w: publish without packet id", errMalformed)
		}
		p.PacketID = uint16(rest[0])<<8 | uint16(rest[1])
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: publish without property length", errMalformed)
	}
	if rest[0] == 0 { // the usual case: no properties
		p.Payload = rest[1:]
		return nil
	}
	// The agent's data session: a subscription identifier on every message.
	if l := int(rest[0]); l < 0x80 && l < len(rest) {
		if id, ok := onlySubID(rest[1 : 1+l]); ok {
			*subID = id
			p.Payload = rest[1+l:]
			return nil
		}
	}
	buf := bytes.NewBuffer(rest)
	props := &packets.Properties{}
	if err := props.Unpack(buf, packets.PUBLISH); err != nil {
		return fmt.Errorf("%w: %w", errMalformed, err)
	}
	p.Properties = props
	p.Payload = rest[len(rest)-buf.Len():]
	return nil
}

// onlySubID decodes a property section that is exactly one Subscription
// Identifier in its shortest encoding; anything else is left to the codec.
func onlySubID(props []byte) (id uint32, ok bool) {
	if len(props) < 2 || len(props) > 5 || props[0] != packets.PropSubscriptionIdentifier {
		return 0, false
	}
	shift := 0
	for i, b := range props[1:] {
		id |= uint32(b&0x7f) << shift
		if b&0x80 == 0 {
			last := i == len(props)-2
			shortest := i == 0 || b != 0
			return id, last && shortest && id != 0
		}
		shift += 7
	}
	return 0, false
}

// writePublish encodes m as a PUBLISH with packet id id straight into w. It
// writes the bytes packets.Publish.WriteTo would.
func writePublish(w *bufio.Writer, m *message.Message, id uint16) error {
	var props []byte
	if pp := toPacketProps(&m.Props); pp != nil {
		props = pp.Pack(packets.PUBLISH)
	}
	rest := 2 + len(m.Topic) + vbiSize(len(props)) + len(props) + len(m.Payload)
	first := packets.PUBLISH<<4 | m.QoS<<1
	if m.Retain {
		first |= 1
	}
	w.WriteByte(first)
	writeVBI(w, rest+packetIDSize(m.QoS))
	w.WriteByte(byte(len(m.Topic) >> 8))
	w.WriteByte(byte(len(m.Topic)))
	w.WriteString(m.Topic)
	if m.QoS > 0 {
		w.WriteByte(byte(id >> 8))
		w.WriteByte(byte(id))
	}
	writeVBI(w, len(props))
	w.Write(props)
	_, err := w.Write(m.Payload)
	return err // a bufio.Writer keeps its first error: the last write reports it
}

func packetIDSize(qos byte) int {
	if qos > 0 {
		return 2
	}
	return 0
}

func writeVBI(w *bufio.Writer, n int) {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		w.WriteByte(b)
		if n == 0 {
			return
		}
	}
}
