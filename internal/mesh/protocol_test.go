package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/message"
)

func ptr[T any](v T) *T { return &v }

// fullMessage has every field and property set.
func fullMessage(i int) message.Message {
	return message.Message{
		Topic:   fmt.Sprintf("sensors/%d/temp", i%17),
		Payload: []byte(fmt.Sprintf("payload-%d", i)),
		QoS:     byte(i % 3),
		Retain:  i%5 == 0,
		Written: int64(i%5) * 1_700_000_000_000_000_000 / 4,
		Props: message.Properties{
			PayloadFormat:   ptr(byte(i % 2)),
			MessageExpiry:   ptr(uint32(i * 7)),
			ContentType:     "text/plain",
			ResponseTopic:   "reply/" + fmt.Sprint(i),
			CorrelationData: []byte{byte(i), byte(i >> 8), 0},
			User:            []message.UserProperty{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "", Value: ""}},
		},
	}
}

func sampleFrames() []frame {
	return []frame{
		{typ: frameSnapshot, version: 7, filters: []string{"a/#", "b/+/c", "$share/g/x"}},
		{typ: frameSnapshot, version: 0},
		{typ: frameSnapshot, version: 3, more: true, filters: []string{"part/1"}},
		{typ: frameDelta, version: 8, filters: []string{"d"}, removed: []string{"a/#"}, at: 1_796_000_000_123_456_789},
		{typ: frameDelta, version: 9, removed: []string{"x"}},
		{typ: frameSnapshotRequest},
		{typ: frameHeartbeat},
		{typ: frameAck, upTo: 1 << 40},
		{typ: frameClient, client: ClientNote{ID: "id with spaces", Clean: true, At: 1764000000123456789}},
		{typ: frameClient, client: ClientNote{ID: "", At: 0}},
		{typ: frameDigest, digest: []DigestEntry{{Topic: "a/b", Stamp: 1 << 60, Hash: 1<<64 - 1}, {Topic: "", Stamp: 0, Hash: 0}}},
		{typ: frameDigest},
		{typ: frameDigest, more: true, digest: []DigestEntry{{Topic: "t", Stamp: 1, Hash: 2}}},
		{typ: frameBroker, brokerUp: true},
		{typ: frameBroker},
		{typ: frameSessions, sessions: SessionChange{Replace: true, Notes: []SessionNote{
			{ID: "dev 1", Online: true, Protocol: 4, Filters: []SessionFilter{{Filter: "devices/1/cmd", QoS: 2}, {Filter: "all/#"}}},
			{ID: "dev2", Drop: true},
			{ID: "dev3", Protocol: 5},
		}}},
		{typ: frameSessions, more: true, sessions: SessionChange{Notes: []SessionNote{{ID: "x", Protocol: 5}}}},
		{typ: frameSessions},
		{typ: framePublishBatch, firstSeq: 1, msgs: []message.Message{fullMessage(1), fullMessage(2), {Topic: "plain"}}},
		{typ: framePublishBatch, firstSeq: 300, msgs: []message.Message{
			{Topic: "t", Payload: []byte("only expiry"), Props: message.Properties{MessageExpiry: ptr(uint32(0))}},
			{Topic: "t", Payload: []byte("only user"), Props: message.Properties{User: []message.UserProperty{{Key: "a", Value: "b"}}}},
			{Topic: "t", QoS: 2, Retain: true},
		}},
	}
}

func encodeFrame(f *frame) []byte {
	return appendFrame(nil, f.typ, encodeFrameBody(nil, f))
}

func decodeOne(data []byte) (frame, error) {
	typ, body, err := readFrame(bufio.NewReader(bytes.NewReader(data)), maxFrameSize)
	if err != nil {
		return frame{}, err
	}
	return decodeFrame(typ, body)
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range sampleFrames() {
		got, err := decodeOne(encodeFrame(&f))
		if err != nil {
			t.Fatalf("decode %d: %v", f.typ, err)
		}
		if f.typ == framePublishBatch {
			if len(got.msgs) != len(f.msgs) || got.firstSeq != f.firstSeq {
				t.Fatalf("batch: got %d msgs from %d, want %d from %d", len(got.msgs), got.firstSeq, len(f.msgs), f.firstSeq)
			}
			for i := range f.msgs {
				if !msgEqual(got.msgs[i], f.msgs[i]) {
					t.Errorf("msg %d: got %+v, want %+v", i, got.msgs[i], f.msgs[i])
				}
			}
			continue
		}
		if !reflect.DeepEqual(got, f) {
			t.Errorf("round trip: got %+v, want %+v", got, f)
		}
	}
}

func TestFrameOverheadIsSmall(t *testing.T) {
	msgs := make([]message.Message, 100)
	payload := 0
	for i := range msgs {
		msgs[i] = message.Message{Topic: "sensors/1/temp", Payload: bytes.Repeat([]byte{'x'}, 100), QoS: 1}
		payload += len(msgs[i].Topic) + len(msgs[i].Payload)
	}
	wire := len(encodeFrame(&frame{typ: framePublishBatch, firstSeq: 1, msgs: msgs}))
	if perMsg := float64(wire-payload) / 100; perMsg > 4 {
		t.Errorf("framing overhead %.2f bytes per message, want <= 4", perMsg)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := encodeFrame(&frame{typ: framePublishBatch, firstSeq: 1, msgs: []message.Message{fullMessage(3)}})
	cases := map[string][]byte{
		"unknown type":     appendFrame(nil, 99, nil),
		"hello after auth": appendFrame(nil, frameHello, []byte("MOHA")),
		"trailing bytes":   appendFrame(nil, frameAck, []byte{1, 2}),
		"broker state 2":   appendFrame(nil, frameBroker, []byte{2}),
		"digest more 2":    appendFrame(nil, frameDigest, []byte{2, 0}),
		"broker no state":  appendFrame(nil, frameBroker, nil),
		"sessions flags":   appendFrame(nil, frameSessions, []byte{4, 0}),
		"note flags":       appendFrame(nil, frameSessions, []byte{0, 1, 1, 'a', 4, 5, 0}),
		"session qos 3":    appendFrame(nil, frameSessions, []byte{0, 1, 1, 'a', 0, 5, 1, 1, 'f', 3}),
		"truncated":        valid[:len(valid)-1],
		"huge count":       appendFrame(nil, frameSnapshot, []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}),
		"string too long":  appendFrame(nil, frameSnapshot, []byte{1, 1, 50, 'a'}),
		"qos 3":            appendFrame(nil, framePublishBatch, []byte{1, 1, 3, 1, 't', 0}),
		"unknown flags":    appendFrame(nil, framePublishBatch, []byte{1, 1, 0x40, 1, 't', 0}),
		"unknown props":    appendFrame(nil, framePublishBatch, []byte{1, 1, flagHasProps, 1, 't', 0, 0x80}),
		"expiry overflow":  appendFrame(nil, framePublishBatch, append([]byte{1, 1, flagHasProps, 1, 't', 0, propExpiry}, binary.AppendUvarint(nil, 1<<33)...)),
		"empty frame":      {0},
		"too large":        binary.AppendUvarint(nil, maxFrameSize+1),
		"bad varint":       bytes.Repeat([]byte{0x80}, 11),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := decodeOne(data)
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v is neither a protocol error nor a truncation", err)
			}
		})
	}
}

func TestReadFrameLimit(t *testing.T) {
	data := appendFrame(nil, frameHello, []byte(strings.Repeat("x", maxPreAuthFrame)))
	_, _, err := readFrame(bufio.NewReader(bytes.NewReader(data)), maxPreAuthFrame)
	if !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("got %v, want frame too large", err)
	}
	_, _, err = readFrame(bufio.NewReader(bytes.NewReader(nil)), maxPreAuthFrame)
	if err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
}

// FuzzDecodeFrame: the decoder never panics, and whatever it accepts
// re-encodes to something that decodes to the same frame.
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(encodeFrame(&fr))
	}
	f.Add([]byte{})
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	// Large frames: what a peer may claim and send (TestDecodeAllocationIsBounded).
	f.Add(appendFrame(nil, framePublishBatch, minimalBatch(maxBatchMessages, 0)))
	f.Add(appendFrame(nil, framePublishBatch, minimalBatch(64, maxBatchUserProps/64)))
	f.Add(appendFrame(nil, framePublishBatch, append(binary.AppendUvarint(binary.AppendUvarint(nil, 1), (1<<20)/3), make([]byte, 1<<20)...)))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for range 4 { // a few frames back to back
			typ, body, err := readFrame(br, 4<<20)
			if err != nil {
				return
			}
			fr, err := decodeFrame(typ, body)
			if err != nil {
				continue
			}
			again, err := decodeOne(encodeFrame(&fr))
			if err != nil {
				t.Fatalf("re-encoded frame does not decode: %v (%+v)", err, fr)
			}
			if !reflect.DeepEqual(again, fr) {
				t.Fatalf("round trip changed the frame:\n got %+v\nwant %+v", again, fr)
			}
		}
	})
}

func BenchmarkEncodeDecodeBatch(b *testing.B) {
	const n = 500
	msgs := make([]message.Message, n)
	for i := range msgs {
		msgs[i] = message.Message{Topic: fmt.Sprintf("bench/%d/value", i%50), Payload: bytes.Repeat([]byte{'p'}, 100), QoS: 1}
	}
	f := frame{typ: framePublishBatch, firstSeq: 1, msgs: msgs}
	var buf []byte
	b.ReportAllocs()
	b.SetBytes(n * 100)
	for b.Loop() {
		buf = encodeFrameBody(buf[:0], &f)
		got, err := decodeFrame(framePublishBatch, buf)
		if err != nil || len(got.msgs) != n {
			b.Fatalf("decode: %v, %d msgs", err, len(got.msgs))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}

// TestLargestAcceptedMessageFitsAFrame: the largest payload a broker may be
// configured to accept (config.MaxMessageSizeLimit), with the longest topic
// and generous properties, fits one link frame.
func TestLargestAcceptedMessageFitsAFrame(t *testing.T) {
	m := message.Message{
		Topic:   strings.Repeat("t", 65535),
		Payload: make([]byte, config.MaxMessageSizeLimit),
		QoS:     2,
		Props:   message.Properties{ContentType: strings.Repeat("c", 65535), CorrelationData: make([]byte, 65535)},
	}
	for range 100 {
		m.Props.User = append(m.Props.User, message.UserProperty{Key: strings.Repeat("k", 1000), Value: strings.Repeat("v", 1000)})
	}
	if n := encodedSize(&m) + 64; n > maxFrameSize {
		t.Fatalf("a message of %d payload bytes needs %d, the link takes %d", config.MaxMessageSizeLimit, n, maxFrameSize)
	}
}
