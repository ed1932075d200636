package session

import (
	"bufio"
	"bytes"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/message"
)

// fuzzMessage builds a message from fuzz inputs; user is "k=v" pairs, one a line.
func fuzzMessage(topic string, payload []byte, flags byte, pf byte, expiry uint32, ct, rt string, corr []byte, user string) message.Message {
	m := message.Message{Topic: topic, Payload: payload, QoS: flags & 3 % 3, Retain: flags&4 != 0}
	if flags&8 != 0 {
		m.Props.PayloadFormat = &pf
	}
	if flags&16 != 0 {
		m.Props.MessageExpiry = &expiry
	}
	m.Props.ContentType, m.Props.ResponseTopic, m.Props.CorrelationData = ct, rt, corr
	if user != "" {
		for line := range strings.SplitSeq(user, "\n") {
			k, v, _ := strings.Cut(line, "=")
			m.Props.User = append(m.Props.User, message.UserProperty{Key: k, Value: v})
		}
	}
	return m
}

// normalized is m as it looks after a round trip: absent and empty are one.
func normalized(m message.Message) message.Message {
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if len(m.Props.CorrelationData) == 0 {
		m.Props.CorrelationData = nil
	}
	if len(m.Props.User) == 0 {
		m.Props.User = nil
	}
	return m
}

func publishMessage(p *packets.Publish) message.Message {
	return message.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: fromPacketProps(p.Properties)}
}

// FuzzPropertiesConversion checks that a message survives the conversion to
// the codec's properties and the session's own PUBLISH framing, that the
// framing is byte for byte the codec's, and that publishSize is exact.
func FuzzPropertiesConversion(f *testing.F) {
	f.Add("a/b", []byte("payload"), byte(0x1f), byte(1), uint32(60), "text/plain", "reply", []byte{1, 2}, "k=1\nx=y\nk=2")
	f.Add("t", []byte{}, byte(0), byte(0), uint32(0), "", "", []byte(nil), "")
	f.Add("t", bytes.Repeat([]byte{7}, 300), byte(2), byte(0), uint32(0), "", "", []byte{}, "=")
	f.Fuzz(func(t *testing.T, topic string, payload []byte, flags, pf byte, expiry uint32, ct, rt string, corr []byte, user string) {
		m := fuzzMessage(topic, payload, flags, pf, expiry, ct, rt, corr, user)
		if validateMessage(&m) != nil {
			return
		}
		id := uint16(expiry) | 1
		var mine bytes.Buffer
		w := bufio.NewWriter(&mine)
		if err := writePublish(w, &m, id); err != nil || w.Flush() != nil {
			t.Fatalf("writePublish: %v", err)
		}
		codecPub := &packets.Publish{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, PacketID: id, Properties: toPacketProps(&m.Props)}
		var theirs bytes.Buffer
		if _, err := codecPub.WriteTo(&theirs); err != nil {
			t.Fatalf("codec WriteTo: %v", err)
		}
		if !bytes.Equal(mine.Bytes(), theirs.Bytes()) {
			t.Fatalf("framing differs from the codec:\nmine   %x\ncodec  %x", mine.Bytes(), theirs.Bytes())
		}
		if n := publishSize(&m); n != mine.Len() {
			t.Fatalf("publishSize = %d, encoded %d bytes", n, mine.Len())
		}
		cp, err := packets.ReadPacket(bytes.NewReader(mine.Bytes()))
		if err != nil {
			t.Fatalf("codec cannot read our PUBLISH: %v", err)
		}
		got := cp.Content.(*packets.Publish)
		if !reflect.DeepEqual(normalized(publishMessage(got)), normalized(m)) || (m.QoS > 0 && got.PacketID != id) {
			t.Fatalf("round trip through the codec:\ngot  %+v\nwant %+v", publishMessage(got), m)
		}
		var fr frame
		if err := readFrame(bufio.NewReader(bytes.NewReader(mine.Bytes())), &fr); err != nil {
			t.Fatalf("readFrame: %v", err)
		}
		if !reflect.DeepEqual(normalized(publishMessage(&fr.pub)), normalized(m)) {
			t.Fatalf("round trip through readFrame:\ngot  %+v\nwant %+v", publishMessage(&fr.pub), m)
		}
	})
}

// FuzzReadFrame compares the session's data-path framing with the codec's on
// arbitrary bytes: whatever one accepts, the other decodes the same way.
// (The session also refuses a Remaining Length of more than four bytes
// [MQTT-1.5.5], which the codec takes; TestMalformedPacketEndsSession covers it.)
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0x40, 2, 0, 1})
	f.Add([]byte{0x50, 3, 0, 2, 0x97})
	f.Add([]byte{0x62, 5, 0, 3, 0x92, 0x01, 0x1f})
	f.Add([]byte{0x70, 9, 0, 4, 0x80, 5, 0x1f, 0, 2, 'n', 'o'})
	f.Add([]byte{0x32, 9, 0, 1, 't', 0, 7, 0, 'a', 'b', 'c'})
	f.Add([]byte{0x3b, 12, 0, 1, 't', 0, 7, 4, 1, 1, 2, 0, 'a', 'b'})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x32, 10, 0, 1, 't', 0, 7, 2, 0x0b, 5, 'a', 'b'})
	f.Add([]byte{0x32, 13, 0, 1, 't', 0, 7, 5, 0x0b, 0xff, 0xff, 0xff, 0x7f, 'a'})
	f.Add([]byte{0x32, 11, 0, 1, 't', 0, 7, 3, 0x0b, 0x80, 0x00, 'a'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || !isDataPath(data[0]) || claimsHuge(data) {
			return
		}
		var fr frame
		mineErr := readFrame(bufio.NewReader(bytes.NewReader(data)), &fr)
		cp, codecErr := packets.ReadPacket(bytes.NewReader(data))
		switch {
		case mineErr == nil && codecErr != nil:
			t.Fatalf("session accepts what the codec refuses (%v): %+v", codecErr, fr)
		case mineErr != nil && codecErr == nil:
			t.Fatalf("session refuses what the codec accepts: %v\ncodec: %v", mineErr, cp)
		case mineErr != nil:
			return
		}
		if cp.PacketID() != fr.id && fr.kind != packets.PUBLISH {
			t.Fatalf("packet id %d, codec %d", fr.id, cp.PacketID())
		}
		switch p := cp.Content.(type) {
		case *packets.Publish:
			want, got := publishMessage(p), publishMessage(&fr.pub)
			if !reflect.DeepEqual(normalized(got), normalized(want)) || p.PacketID != fr.pub.PacketID || p.Duplicate != fr.pub.Duplicate {
				t.Fatalf("publish differs:\nmine  %+v\ncodec %+v", fr.pub, p)
			}
			if fr.subID != 0 && (p.Properties == nil || p.Properties.SubscriptionIdentifier == nil || uint32(*p.Properties.SubscriptionIdentifier) != fr.subID) {
				t.Fatalf("subscription identifier %d, codec %+v", fr.subID, p.Properties)
			}
		case *packets.Puback:
			checkReason(t, fr.reason, p.ReasonCode)
		case *packets.Pubrec:
			checkReason(t, fr.reason, p.ReasonCode)
		case *packets.Pubrel:
			checkReason(t, fr.reason, p.ReasonCode)
		case *packets.Pubcomp:
			checkReason(t, fr.reason, p.ReasonCode)
		}
	})
}

func checkReason(t *testing.T, mine, codec byte) {
	t.Helper()
	if mine != codec {
		t.Fatalf("reason code 0x%02x, codec 0x%02x", mine, codec)
	}
}

// FuzzReadOne feeds arbitrary bytes to a session's packet handling: it may
// end the session with an error, never panic.
func FuzzReadOne(f *testing.F) {
	f.Add([]byte{0x32, 6, 0, 1, 't', 0, 9, 0, 0x62, 2, 0, 9, 0x40, 2, 0, 1})
	f.Add([]byte{0x34, 6, 0, 1, 't', 0, 9, 0, 0x50, 2, 0, 2, 0x70, 3, 0, 2, 0x92})
	f.Add([]byte{0x90, 4, 0, 3, 0, 0x80, 0xb0, 3, 0, 4, 0, 0xd0, 0})
	f.Add([]byte{0xe0, 1, 0x8e, 0x36, 6, 0, 1, 't', 0, 9, 0})
	f.Add([]byte{0x20, 3, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := offlineSession(t, data)
		var fr frame
		for range 100 {
			if next, _ := s.br.Peek(6); claimsHuge(next) && !longLength(next) {
				return
			}
			if err := s.readOne(&fr); err != nil {
				return
			}
		}
	})
}

// claimsHuge tells whether the packet at the start of data claims more than
// 64 KiB, or has a Remaining Length longer than four bytes: both the codec and
// the session allocate a claimed length up front, which would only slow the
// fuzzer down (and the codec would read the five-byte garbage as up to 4 GiB).
func claimsHuge(data []byte) bool {
	n, shift := 0, 0
	for i := 1; i < len(data); i++ {
		if i > 4 {
			return true
		}
		n |= int(data[i]&0x7f) << shift
		if data[i]&0x80 == 0 {
			break
		}
		shift += 7
	}
	return n > 1<<16
}

// longLength tells whether data starts with a Remaining Length longer than
// four bytes, which the session refuses before allocating anything.
func longLength(data []byte) bool {
	return len(data) >= 6 && data[1]&data[2]&data[3]&data[4]&0x80 != 0
}

// offlineSession is a session reading data, with a QoS 1 and a QoS 2 publish
// in flight and a subscribe and an unsubscribe pending; nothing runs.
func offlineSession(t testing.TB, data []byte) *Session {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	s := newSession(withDefaults(Config{Logger: testLogger(t)}), a, func(d *Delivery) { d.Ack() })
	s.br = bufio.NewReader(bytes.NewReader(data))
	s.window = 20
	s.inflight[1] = &outbound{msg: message.Message{Topic: "a", QoS: 1}, id: 1}
	s.inflight[2] = &outbound{msg: message.Message{Topic: "a", QoS: 2}, id: 2}
	s.requests[3] = &request{kind: packets.SUBSCRIBE, result: make(chan requestResult, 1)}
	s.requests[4] = &request{kind: packets.UNSUBSCRIBE, result: make(chan requestResult, 1)}
	return s
}
