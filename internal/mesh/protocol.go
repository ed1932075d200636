package mesh

// Wire protocol, version 4 (2: DELTA carries its time; 3: BROKER; 4: SNAPSHOT and
// DIGEST in parts).
//
// One TCP stream (optionally TLS) per pair of agents; the node whose name
// sorts lower dials. Every unit on the stream, handshake included, is a frame:
//
//	uvarint length | type byte | body        (length counts type + body)
//
// Strings are a uvarint length followed by the bytes. A frame longer than
// 64 MiB (1 KiB before authentication) is a protocol error: the link closes.
//
// Handshake (deadline 5 s; the secret never crosses the wire):
//
//  1. dialer → acceptor  HELLO {"MOHA", version uvarint = 1, node string,
//     epoch uint64 big-endian (random per process), nonce [32]byte}
//  2. acceptor → dialer  HELLO {same fields for the acceptor, then
//     mac [32]byte = HMAC-SHA256(secret, "moha/1 accept" | dialerNonce |
//     acceptorNonce | dialerNode | acceptorNode)}
//  3. dialer verifies the mac, then → AUTH {mac [32]byte = HMAC-SHA256(secret,
//     "moha/1 dial" | acceptorNonce | dialerNonce | dialerNode | acceptorNode)}
//  4. the acceptor verifies it; the link is up on both sides.
//
// In the mac input the node names are length-prefixed (uvarint) so that two
// different name pairs can never produce the same bytes. Anything unexpected
// (bad magic, another version, an unknown node or a dialer that should be
// the acceptor, a bad mac, a timeout, garbage) closes the connection and is
// counted in moha_link_rejected_total{reason}.
//
// Frames after the handshake:
//
//	SNAPSHOT         {version uvarint, more byte, n uvarint, n × filter string}
//	DELTA            {version uvarint, nAdd uvarint, adds, nRemove uvarint, removes, at uvarint (unix nanos)}
//	SNAPSHOT_REQUEST {}
//	PUBLISH_BATCH    {firstSeq uvarint, n uvarint, n × msg}
//	ACK              {upTo uvarint}
//	HEARTBEAT        {}
//	CLIENT           {client id string, flags byte (bit 0 clean start), at uvarint (unix nanos)}
//	DIGEST           {more byte, n uvarint, n × (topic string, stamp uvarint, hash uvarint)}
//	BROKER           {up byte (0 or 1)}
//
// SNAPSHOT and DIGEST come in parts of bounded size: more = 1 says another
// part follows, and the receiver acts on the whole once the part with
// more = 0 arrived. No frame is then larger than a part, whatever the
// number of filters or retained topics, and other frames (messages) may
// be written between the parts.
//
// Interest: a link starts with a SNAPSHOT of the sender's filters; every
// later change is a DELTA whose version is the previous one + 1. A receiver
// that sees a gap ignores deltas, sends SNAPSHOT_REQUEST, and the sender
// answers with a SNAPSHOT. A DELTA carries when the sender's interest
// changed (its clock): the receiver replays to it what its broker accepted
// since then that the new filters match (docs/ARCHITECTURE.md, "The
// subscribe window").
//
// msg = flags byte (bits 0-1 QoS, bit 2 retain, bit 3 has properties) |
// topic string | payload (uvarint length + bytes) | when bit 4 is set, the
// retained write's timestamp (uvarint unix nanos) | properties when flagged:
// a presence byte (bit 0 payload format, 1 message expiry, 2 content type,
// 3 response topic, 4 correlation data, 5 user properties) followed by the
// present fields in that order: payload format byte, expiry uvarint, content
// type string, response topic string, correlation data (uvarint length +
// bytes), user property count uvarint + that many key/value string pairs.
//
// Sequence numbers are per connection and start at 1; a batch's firstSeq
// must follow the previous batch exactly. ACK is cumulative: every message
// with seq <= upTo was accepted by the receiver's broker. The receiver acks
// in seq order only and coalesces acks into one frame when its writer is
// idle. On reconnect the sender resends every unacknowledged message (with
// new sequence numbers) before anything else: at-least-once across link
// loss, a duplicate is possible, a loss is not.
//
// CLIENT announces that a client connected to the sender's broker at time
// at: a receiver holding a connection with the same id closes it (a client
// id is connected on one node at most). Announcements are not buffered for
// a peer whose link is down: by the time it returns they are stale.
//
// DIGEST lists the retained messages the sender's broker holds (topic, the
// write's timestamp, a hash of its content), sent when a link starts: the
// receiver sends back only the retained messages the sender lacks or holds
// an older version of (anti-entropy).
//
// BROKER says whether the sender's sessions with its broker are up: sent
// when a link starts and on every change. While a peer's broker is down the
// receiver treats it as absent for outcomes: what it holds, and what comes
// next while it fits, is reported Buffered (the origin broker may go on)
// and sent as the link allows; the peer republishes it once its broker is
// back.
//
// HEARTBEAT is written when the writer was idle for the heartbeat interval;
// a link silent for three intervals is dead.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/retained"
)

// Frame types. The numbers are part of the wire protocol.
const (
	frameHello           byte = 1
	frameAuth            byte = 2
	frameSnapshot        byte = 3
	frameDelta           byte = 4
	frameSnapshotRequest byte = 5
	framePublishBatch    byte = 6
	frameAck             byte = 7
	frameHeartbeat       byte = 8
	frameClient          byte = 9
	frameDigest          byte = 10
	frameBroker          byte = 11
	frameSessions        byte = 12
	// framePublishBatchZ is a PUBLISH_BATCH compressed on the link's
	// stream (compress.go): the reader inflates it into one.
	framePublishBatchZ byte = 13
)

const (
	protocolVersion = 6 // 2: DELTA carries its time; 3: BROKER; 4: SNAPSHOT and DIGEST in parts; 5: SESSIONS; 6: PUBLISH_BATCH_Z
	protocolMagic   = "MOHA"
	maxFrameSize    = 64 << 20 // after authentication
	maxPreAuthFrame = 1 << 10  // handshake frames
	nonceSize       = 32
	macSize         = 32
	batchTargetSize = 64 << 10 // a batch closes once its body passes this size
	// A batch holds at most this many messages and user properties: what
	// decoding a frame allocates (per message a struct several times the
	// size of its smallest encoding) stays bounded whatever a peer sends.
	maxBatchMessages  = 16384
	maxBatchUserProps = 65536
)

// Message flag and property presence bits.
const (
	flagQoSMask  = 0x03
	flagRetain   = 0x04
	flagHasProps = 0x08
	flagWritten  = 0x10 // a retained write's timestamp follows the payload
	flagKnown    = flagQoSMask | flagRetain | flagHasProps | flagWritten

	propPayloadFormat = 1 << 0
	propExpiry        = 1 << 1
	propContentType   = 1 << 2
	propResponseTopic = 1 << 3
	propCorrelation   = 1 << 4
	propUser          = 1 << 5
	propKnown         = 1<<6 - 1
)

// Protocol errors. They end a link; the decoder wraps them with detail.
var (
	ErrProtocol      = errors.New("cluster: protocol error")
	errFrameTooLarge = fmt.Errorf("%w: frame too large", ErrProtocol)
	errTruncated     = fmt.Errorf("%w: truncated frame", ErrProtocol)
)

// frame is one decoded post-handshake frame. Only the fields of its type are set.
type frame struct {
	typ      byte
	version  uint64            // SNAPSHOT, DELTA
	filters  []string          // SNAPSHOT: the set; DELTA: added
	removed  []string          // DELTA
	at       int64             // DELTA: when the change was made (unix nanos)
	firstSeq uint64            // PUBLISH_BATCH
	msgs     []message.Message // PUBLISH_BATCH
	upTo     uint64            // ACK
	client   ClientNote        // CLIENT
	digest   []DigestEntry     // DIGEST
	brokerUp bool              // BROKER
	sessions SessionChange     // SESSIONS (one part)
	more     bool              // SNAPSHOT, DIGEST, SESSIONS: another part follows
}

// DigestEntry is one entry of a DIGEST frame: the retained store's type.
type DigestEntry = retained.DigestEntry

// ClientNote is one CLIENT announcement.
type ClientNote struct {
	ID    string
	Clean bool
	At    int64 // unix nanoseconds, the sender's clock
}

// readFrame reads one frame's type and body. The body is freshly allocated:
// decoded messages may alias it. A clean end of stream before a frame starts
// is io.EOF.
func readFrame(r *bufio.Reader, limit int) (typ byte, body []byte, err error) {
	n, err := readLength(r, limit)
	if err != nil {
		return 0, nil, err
	}
	typ, err = r.ReadByte()
	if err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	body = make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return typ, body, nil
}

// readLength reads a frame's uvarint length, rejecting zero and anything
// over limit as soon as the varint says so (before reading the body).
func readLength(r *bufio.Reader, limit int) (int, error) {
	var n uint64
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 {
				return 0, unexpectedEOF(err)
			}
			return 0, err
		}
		n |= uint64(b&0x7f) << (7 * i)
		if n > uint64(limit) {
			return 0, fmt.Errorf("%w (limit %d)", errFrameTooLarge, limit)
		}
		if b < 0x80 {
			break
		}
		if i == 9 {
			return 0, fmt.Errorf("%w: bad frame length", ErrProtocol)
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: empty frame", ErrProtocol)
	}
	return int(n), nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendFrame appends length | type | body to dst.
func appendFrame(dst []byte, typ byte, body []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(body)+1))
	dst = append(dst, typ)
	return append(dst, body...)
}

// decodeFrame decodes a post-handshake frame body. It never panics and
// rejects trailing bytes, unknown types and unknown flag bits.
func decodeFrame(typ byte, body []byte) (frame, error) {
	d := decoder{buf: body}
	f := frame{typ: typ}
	switch typ {
	case frameSnapshot:
		f.version = d.uvarint()
		f.more = d.flag("snapshot more")
		f.filters = d.strings()
	case frameDelta:
		f.version = d.uvarint()
		f.filters = d.strings()
		f.removed = d.strings()
		f.at = int64(d.uvarint())
	case framePublishBatch:
		f.firstSeq = d.uvarint()
		f.msgs = d.messages()
	case frameAck:
		f.upTo = d.uvarint()
	case frameClient:
		f.client.ID = d.string()
		flags := d.byte()
		if flags&^1 != 0 {
			d.fail("unknown client flags")
		}
		f.client.Clean = flags&1 != 0
		f.client.At = int64(d.uvarint())
	case frameDigest:
		f.more = d.flag("digest more")
		n := d.count(3)
		if n > 0 {
			f.digest = make([]DigestEntry, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			f.digest[i] = DigestEntry{Topic: d.string(), Stamp: int64(d.uvarint()), Hash: d.uvarint()}
		}
	case frameBroker:
		f.brokerUp = d.flag("broker state")
	case frameSessions:
		d.sessions(&f)
	case frameSnapshotRequest, frameHeartbeat:
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, typ)
	}
	if d.err == nil && len(d.buf) > 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes in frame type %d", ErrProtocol, len(d.buf), typ)
	}
	if d.err != nil {
		return frame{}, d.err
	}
	return f, nil
}

// encodeFrameBody appends the body of f to dst (the writer frames it).
func encodeFrameBody(dst []byte, f *frame) []byte {
	switch f.typ {
	case frameSnapshot:
		dst = binary.AppendUvarint(dst, f.version)
		dst = appendFlag(dst, f.more)
		dst = appendStrings(dst, f.filters)
	case frameDelta:
		dst = binary.AppendUvarint(dst, f.version)
		dst = appendStrings(dst, f.filters)
		dst = appendStrings(dst, f.removed)
		dst = binary.AppendUvarint(dst, uint64(f.at))
	case framePublishBatch:
		dst = binary.AppendUvarint(dst, f.firstSeq)
		dst = binary.AppendUvarint(dst, uint64(len(f.msgs)))
		for i := range f.msgs {
			dst = appendMessage(dst, &f.msgs[i])
		}
	case frameAck:
		dst = binary.AppendUvarint(dst, f.upTo)
	case frameDigest:
		dst = appendFlag(dst, f.more)
		dst = binary.AppendUvarint(dst, uint64(len(f.digest)))
		for _, e := range f.digest {
			dst = appendString(dst, e.Topic)
			dst = binary.AppendUvarint(dst, uint64(e.Stamp))
			dst = binary.AppendUvarint(dst, e.Hash)
		}
	case frameBroker:
		dst = appendFlag(dst, f.brokerUp)
	case frameSessions:
		dst = appendSessions(dst, f)
	case frameClient:
		dst = appendString(dst, f.client.ID)
		var flags byte
		if f.client.Clean {
			flags = 1
		}
		dst = append(dst, flags)
		dst = binary.AppendUvarint(dst, uint64(f.client.At))
	}
	return dst
}

func appendFlag(dst []byte, b bool) []byte {
	if b {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendStrings(dst []byte, ss []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ss)))
	for _, s := range ss {
		dst = appendString(dst, s)
	}
	return dst
}

// appendMessage appends one msg of a PUBLISH_BATCH.
func appendMessage(dst []byte, m *message.Message) []byte {
	presence := propertyPresence(&m.Props)
	flags := m.QoS & flagQoSMask
	if m.Retain {
		flags |= flagRetain
	}
	if presence != 0 {
		flags |= flagHasProps
	}
	if m.Written != 0 {
		flags |= flagWritten
	}
	dst = append(dst, flags)
	dst = appendString(dst, m.Topic)
	dst = appendBytes(dst, m.Payload)
	if m.Written != 0 {
		dst = binary.AppendUvarint(dst, uint64(m.Written))
	}
	if presence == 0 {
		return dst
	}
	return appendProperties(dst, presence, &m.Props)
}

func propertyPresence(p *message.Properties) byte {
	var b byte
	if p.PayloadFormat != nil {
		b |= propPayloadFormat
	}
	if p.MessageExpiry != nil {
		b |= propExpiry
	}
	if p.ContentType != "" {
		b |= propContentType
	}
	if p.ResponseTopic != "" {
		b |= propResponseTopic
	}
	if len(p.CorrelationData) > 0 {
		b |= propCorrelation
	}
	if len(p.User) > 0 {
		b |= propUser
	}
	return b
}

func appendProperties(dst []byte, presence byte, p *message.Properties) []byte {
	dst = append(dst, presence)
	if presence&propPayloadFormat != 0 {
		dst = append(dst, *p.PayloadFormat)
	}
	if presence&propExpiry != 0 {
		dst = binary.AppendUvarint(dst, uint64(*p.MessageExpiry))
	}
	if presence&propContentType != 0 {
		dst = appendString(dst, p.ContentType)
	}
	if presence&propResponseTopic != 0 {
		dst = appendString(dst, p.ResponseTopic)
	}
	if presence&propCorrelation != 0 {
		dst = appendBytes(dst, p.CorrelationData)
	}
	if presence&propUser != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(p.User)))
		for _, u := range p.User {
			dst = appendString(dst, u.Key)
			dst = appendString(dst, u.Value)
		}
	}
	return dst
}

// encodedSize is an upper bound of appendMessage's output for m, used to
// size batches without encoding twice.
func encodedSize(m *message.Message) int {
	const varint = binary.MaxVarintLen64
	return 2 + m.Size() + varint*(7+2*len(m.Props.User))
}

// decoder reads fields from a frame body; the first error sticks and every
// later read returns a zero value, so callers check err once at the end.
type decoder struct {
	buf       []byte
	err       error
	userProps int // user properties decoded so far in this frame
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errTruncated, what)
	}
	d.buf = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.buf) == 0 {
		d.fail("missing byte")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

// bytes returns a length-prefixed field aliasing the body (nil when empty).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail("field longer than frame")
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	if n == 0 {
		return nil
	}
	return b
}

func (d *decoder) string() string {
	return string(d.bytes())
}

// count reads an element count and checks it against the bytes left, each
// element taking at least minSize bytes, so a hostile count cannot make us
// allocate more than the frame holds.
// flag reads a byte that must be 0 or 1.
func (d *decoder) flag(what string) bool {
	switch b := d.byte(); b {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(what + " not 0 or 1")
		return false
	}
}

func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.buf)/minSize) {
		d.fail("count larger than frame")
		return 0
	}
	return int(n)
}

func (d *decoder) strings() []string {
	n := d.count(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, 0, n)
	for range n {
		ss = append(ss, d.string())
	}
	if d.err != nil {
		return nil
	}
	return ss
}

func (d *decoder) messages() []message.Message {
	n := d.count(3) // flags, topic length, payload length
	if n == 0 {
		return nil
	}
	if n > maxBatchMessages {
		d.err = fmt.Errorf("%w: %d messages in one batch, at most %d", ErrProtocol, n, maxBatchMessages)
		return nil
	}
	msgs := make([]message.Message, n)
	for i := range msgs {
		d.message(&msgs[i])
		if d.err != nil {
			return nil
		}
	}
	return msgs
}

func (d *decoder) message(m *message.Message) {
	flags := d.byte()
	if d.err == nil && flags&^flagKnown != 0 {
		d.err = fmt.Errorf("%w: unknown message flags %#x", ErrProtocol, flags)
	}
	if d.err == nil && flags&flagQoSMask == 3 {
		d.err = fmt.Errorf("%w: QoS 3", ErrProtocol)
	}
	m.QoS = flags & flagQoSMask
	m.Retain = flags&flagRetain != 0
	m.Topic = d.string()
	m.Payload = d.bytes()
	if flags&flagWritten != 0 {
		m.Written = int64(d.uvarint())
	}
	if flags&flagHasProps != 0 {
		d.properties(&m.Props)
	}
}

func (d *decoder) properties(p *message.Properties) {
	presence := d.byte()
	if d.err == nil && presence&^propKnown != 0 {
		d.err = fmt.Errorf("%w: unknown property bits %#x", ErrProtocol, presence)
	}
	if presence&propPayloadFormat != 0 {
		f := d.byte()
		p.PayloadFormat = &f
	}
	if presence&propExpiry != 0 {
		v := d.uvarint()
		if v > math.MaxUint32 && d.err == nil {
			d.err = fmt.Errorf("%w: message expiry %d out of range", ErrProtocol, v)
		}
		e := uint32(v)
		p.MessageExpiry = &e
	}
	if presence&propContentType != 0 {
		p.ContentType = d.string()
	}
	if presence&propResponseTopic != 0 {
		p.ResponseTopic = d.string()
	}
	if presence&propCorrelation != 0 {
		p.CorrelationData = d.bytes()
	}
	if presence&propUser != 0 {
		d.userProperties(p)
	}
}

func (d *decoder) userProperties(p *message.Properties) {
	n := d.count(2)
	if n == 0 {
		return
	}
	if d.userProps += n; d.userProps > maxBatchUserProps {
		d.err = fmt.Errorf("%w: over %d user properties in one frame", ErrProtocol, maxBatchUserProps)
		return
	}
	p.User = make([]message.UserProperty, 0, n)
	for range n {
		k := d.string()
		v := d.string()
		p.User = append(p.User, message.UserProperty{Key: k, Value: v})
	}
}
