// Package message owns the shape of one MQTT application message as the
// cluster carries it: what a broker delivered to an agent, what crosses a
// link between agents, and what the receiving agent republishes.
package message

// Message is one MQTT application message. It keeps everything a subscriber
// on another node must see exactly as a single broker would have shown it.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // 0, 1 or 2: the QoS the origin broker delivered it at
	Retain  bool // retain flag as published (the data session uses Retain As Published)
	Props   Properties
	// Written is when the origin agent saw a retained message published
	// (unix nanoseconds; 0 when not stamped). Concurrent retained writes to
	// one topic on different nodes converge on the latest (last writer wins).
	Written int64
}

// Properties are the MQTT v5 PUBLISH properties that must survive a hop
// between brokers. Topic aliases and subscription identifiers are per
// connection and are deliberately not carried.
type Properties struct {
	PayloadFormat   *byte   // nil when absent
	MessageExpiry   *uint32 // seconds left, as the origin broker counted down; nil when absent
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	User            []UserProperty // order kept, duplicates allowed (MQTT v5 3.3.2.3.7)
}

// IsZero reports whether p carries no property at all, as most messages do.
func (p *Properties) IsZero() bool {
	return p.PayloadFormat == nil && p.MessageExpiry == nil && p.ContentType == "" &&
		p.ResponseTopic == "" && len(p.CorrelationData) == 0 && len(p.User) == 0
}

// UserProperty is one MQTT v5 user property (a key may repeat).
type UserProperty struct {
	Key, Value string
}

// Size is the approximate number of bytes the message occupies, used for
// buffer accounting.
func (m *Message) Size() int {
	n := len(m.Topic) + len(m.Payload) + len(m.Props.ContentType) +
		len(m.Props.ResponseTopic) + len(m.Props.CorrelationData)
	for _, u := range m.Props.User {
		n += len(u.Key) + len(u.Value)
	}
	return n
}
