package session

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/packets"

	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/topic"
)

// maxString is the longest UTF-8 string or binary field MQTT can carry (a
// two-byte length prefix). The codec silently truncates longer ones, so they
// are refused before encoding.
const maxString = 65535

var errInvalidMessage = errors.New("session: invalid message")

// toPacketProps converts the carried PUBLISH properties to the codec's form.
// It returns nil when there is nothing to send, which the codec encodes as
// an empty property list.
func toPacketProps(p *message.Properties) *packets.Properties {
	if p.IsZero() {
		return nil
	}
	out := &packets.Properties{
		PayloadFormat:   p.PayloadFormat,
		MessageExpiry:   p.MessageExpiry,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
	}
	if len(p.User) > 0 {
		out.User = make([]packets.User, len(p.User))
		for i, u := range p.User {
			out.User[i] = packets.User{Key: u.Key, Value: u.Value}
		}
	}
	return out
}

// fromPacketProps keeps the PUBLISH properties that must survive a hop.
// Topic alias and subscription identifier are per connection: dropped.
func fromPacketProps(p *packets.Properties) message.Properties {
	if p == nil {
		return message.Properties{}
	}
	out := message.Properties{
		PayloadFormat:   p.PayloadFormat,
		MessageExpiry:   p.MessageExpiry,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
	}
	if len(p.User) > 0 {
		out.User = make([]message.UserProperty, len(p.User))
		for i, u := range p.User {
			out.User[i] = message.UserProperty{Key: u.Key, Value: u.Value}
		}
	}
	return out
}

// validateMessage refuses what the broker would treat as a malformed packet
// (and answer by closing the whole connection) or what the codec would
// silently truncate.
func validateMessage(m *message.Message) error {
	if m.QoS > 2 {
		return fmt.Errorf("%w: qos %d", errInvalidMessage, m.QoS)
	}
	// The topic package holds the one definition of a valid topic name.
	if err := topic.ValidateTopic(m.Topic); err != nil {
		return fmt.Errorf("%w: %w", errInvalidMessage, err)
	}
	return validateProps(&m.Props)
}

func validateProps(p *message.Properties) error {
	if p.PayloadFormat != nil && *p.PayloadFormat > 1 {
		return fmt.Errorf("%w: payload format %d", errInvalidMessage, *p.PayloadFormat)
	}
	if len(p.CorrelationData) > maxString {
		return fmt.Errorf("%w: correlation data longer than %d bytes", errInvalidMessage, maxString)
	}
	if err := validateString("content type", p.ContentType); err != nil {
		return err
	}
	if err := validateString("response topic", p.ResponseTopic); err != nil {
		return err
	}
	for _, u := range p.User {
		if err := validateString("user property key", u.Key); err != nil {
			return err
		}
		if err := validateString("user property value", u.Value); err != nil {
			return err
		}
	}
	return nil
}

func validateString(what, s string) error {
	if len(s) > maxString {
		return fmt.Errorf("%w: %s longer than %d bytes", errInvalidMessage, what, maxString)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", errInvalidMessage, what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%w: %s contains U+0000", errInvalidMessage, what)
		}
	}
	return nil
}

// reasonNames are the MQTT v5 reason codes the session reports (CONNACK,
// PUBACK/PUBREC/PUBCOMP, SUBACK, UNSUBACK, DISCONNECT).
var reasonNames = map[byte]string{
	0x04: "disconnect with will message",
	0x10: "no matching subscribers",
	0x11: "no subscription existed",
	0x80: "unspecified error",
	0x81: "malformed packet",
	0x82: "protocol error",
	0x83: "implementation specific error",
	0x84: "unsupported protocol version",
	0x85: "client identifier not valid",
	0x86: "bad user name or password",
	0x87: "not authorized",
	0x88: "server unavailable",
	0x89: "server busy",
	0x8A: "banned",
	0x8B: "server shutting down",
	0x8C: "bad authentication method",
	0x8D: "keep alive timeout",
	0x8E: "session taken over",
	0x8F: "topic filter invalid",
	0x90: "topic name invalid",
	0x91: "packet identifier in use",
	0x92: "packet identifier not found",
	0x93: "receive maximum exceeded",
	0x94: "topic alias invalid",
	0x95: "packet too large",
	0x96: "message rate too high",
	0x97: "quota exceeded",
	0x98: "administrative action",
	0x99: "payload format invalid",
	0x9A: "retain not supported",
	0x9B: "qos not supported",
	0x9C: "use another server",
	0x9D: "server moved",
	0x9E: "shared subscriptions not supported",
	0x9F: "connection rate exceeded",
	0xA0: "maximum connect time",
	0xA1: "subscription identifiers not supported",
	0xA2: "wildcard subscriptions not supported",
}

// reasonString names a reason code the way errors show it: "not authorized (0x87)".
func reasonString(code byte) string {
	name, ok := reasonNames[code]
	if !ok {
		name = "unknown reason"
	}
	return fmt.Sprintf("%s (0x%02x)", name, code)
}

// reasonError is a negative acknowledgement from the broker.
type reasonError struct {
	what string // e.g. "publish", "subscribe"
	code byte
}

func (e *reasonError) Error() string {
	return fmt.Sprintf("session: broker rejected %s: %s", e.what, reasonString(e.code))
}

// IsRejected reports whether a Publish completion error means the message
// itself was refused — by the broker (a reason code >= 0x80) or before
// sending because the broker could not take it. Any other error is the
// session ending: the message may be sent again on a new session. Some
// refusals are transient (IsTransient): sending again later may succeed.
func IsRejected(err error) bool {
	var re *reasonError
	return errors.As(err, &re) || errors.Is(err, errInvalidMessage)
}

// NewRefusal returns the error a Publish completion carries when the broker
// refused the message with code (>= 0x80): for fakes of a session in tests
// of the packages that use it.
func NewRefusal(code byte) error { return &reasonError{what: "publish", code: code} }

// IsTransient reports whether a refusal may not recur: unspecified error
// (0x80), implementation specific error (0x83) and quota exceeded (0x97)
// depend on the broker's state at the time. Every other refusal (not
// authorized, topic name invalid, packet too large, payload format
// invalid, ...) will be repeated for the same message.
func IsTransient(err error) bool {
	var re *reasonError
	if !errors.As(err, &re) {
		return false
	}
	switch re.code {
	case 0x80, 0x83, 0x97:
		return true
	}
	return false
}

// RefusalReason names the refusal in err for a metric label ("0x87"), or
// "invalid" for a message refused before it was sent.
func RefusalReason(err error) string {
	var re *reasonError
	if errors.As(err, &re) {
		return fmt.Sprintf("0x%02x", re.code)
	}
	return "invalid"
}
