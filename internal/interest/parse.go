// Package interest owns what this node's local clients are subscribed to: it
// parses the Mosquitto 2.0.11 log lines the broker publishes on
// $SYS/broker/log/<level> (connects, disconnects, takeovers, session expiry,
// subscribes, unsubscribes) and keeps the per-client interest table from
// which the node's advertised filter set is derived. It is pure logic: the
// caller delivers the log messages and the broker's subscription counter.
//
// The line formats and session rules are those of Mosquitto 2.0.11
// (docs/ARCHITECTURE.md, "Interest"), checked against the strings of the
// installed binary.
package interest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Log topics Mosquitto publishes on with `log_dest topic`.
const (
	TopicNotice      = "$SYS/broker/log/N"
	TopicError       = "$SYS/broker/log/E"
	TopicInfo        = "$SYS/broker/log/I"
	TopicSubscribe   = "$SYS/broker/log/M/subscribe"
	TopicUnsubscribe = "$SYS/broker/log/M/unsubscribe"
)

// LogFilters returns the filters the agent's log session subscribes to.
func LogFilters() []string {
	return []string{TopicNotice, TopicError, TopicInfo, "$SYS/broker/log/M/#"}
}

// maxLogPayload is the size at which Mosquitto truncates a log payload
// (verified: a 1100-byte client id yields a 999-byte payload). A payload of
// that size may have lost its tail, so nothing in it can be trusted.
const maxLogPayload = 999

// ErrMalformed is returned for a line of a known log family that does not
// have the shape Mosquitto gives it.
var ErrMalformed = errors.New("interest: malformed log line")

// Kind is what a log line tells about the broker's sessions.
type Kind int

const (
	// Ignored lines carry nothing about sessions or subscriptions.
	Ignored Kind = iota
	// Connected: a client (or bridge) completed its CONNECT.
	Connected
	// Disconnected: a client's connection ended, for whatever reason.
	Disconnected
	// Takeover: a new connection with the same id closed the old one.
	Takeover
	// Expired: a persistent session expired and was removed.
	Expired
	// Subscribed: one filter was added to a session.
	Subscribed
	// Unsubscribed: one filter was removed from a session (or was absent).
	Unsubscribed
	// Stopping: the broker is shutting down cleanly ("mosquitto version %s
	// terminating"): no client acts after it.
	Stopping
	// Saved: the stopping broker wrote its persistence database: what it
	// restores on its next start is the sessions as they are now.
	Saved
	// SaveFailed: the stopping broker could not write its database.
	SaveFailed
	// QueueDropped: the broker started dropping messages queued for a
	// session (max_queued_messages reached; logged once per connection).
	QueueDropped
)

var kindNames = [...]string{"ignored", "connected", "disconnected", "takeover", "expired", "subscribed", "unsubscribed", "stopping", "saved", "save failed", "queue dropped"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
	return kindNames[k]
}

// Event is one parsed log line.
type Event struct {
	Kind      Kind
	Time      int64  // the unix timestamp prefix
	ClientID  string // Connected, Disconnected, Takeover, Expired (may contain spaces)
	Protocol  int    // Connected: 3 (p1 = MQTT 3.1), 4 (p2 = 3.1.1), 5 (p5)
	Clean     bool   // Connected: c1 (clean start)
	KeepAlive int    // Connected
	Username  string // Connected, if present (u'...')
	Bridge    bool   // Connected: "New bridge connected ..."
	From      string // Connected: the client's address as logged ("host:port")
	// EndsWithConnection is set by the caller, never by ParseLine: the
	// session of this Connected line ends when the connection closes,
	// whatever its protocol (the agent's own connection with session
	// expiry 0, which the log cannot show).
	EndsWithConnection bool
	// Rest is, for Subscribed, "<id> <qos> <filter>" and, for Unsubscribed,
	// "<id> <filter>". Ids and filters may contain spaces, so the split is
	// ambiguous on its own; the Table resolves it against the ids it knows.
	Rest string
}

// ParseLine parses one log message. The topic decides the family; a topic
// outside the four families yields an Ignored event and no error.
func ParseLine(topic string, payload []byte) (Event, error) {
	parse := lineParser(topic)
	if parse == nil {
		return Event{Kind: Ignored}, nil
	}
	if len(payload) >= maxLogPayload {
		return Event{}, fmt.Errorf("%w: %d-byte payload on %s may be truncated", ErrMalformed, len(payload), topic)
	}
	ts, text, ok := splitTimestamp(string(payload))
	if !ok {
		return Event{}, fmt.Errorf("%w: no timestamp prefix: %q", ErrMalformed, clip(string(payload)))
	}
	ev, err := parse(text)
	if err != nil {
		return Event{}, err
	}
	ev.Time = ts
	return ev, nil
}

func lineParser(topic string) func(string) (Event, error) {
	switch topic {
	case TopicNotice:
		return parseNotice
	case TopicError:
		return parseError
	case TopicInfo:
		return parseInfo
	case TopicSubscribe:
		return parseSubscribe
	case TopicUnsubscribe:
		return parseUnsubscribe
	}
	return nil
}

// splitTimestamp splits Mosquitto's "%d: " prefix from the text.
func splitTimestamp(s string) (int64, string, bool) {
	i := digits(s)
	if i == 0 || !strings.HasPrefix(s[i:], ": ") {
		return 0, "", false
	}
	ts, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, "", false
	}
	return ts, s[i+2:], true
}

const (
	prefixClientConnected = "New client connected from "
	prefixBridgeConnected = "New bridge connected from "
	prefixExpiring        = "Expiring client "
	suffixExpiring        = " due to timeout."
	prefixBadSocket       = "Bad socket read/write on client "
	prefixQueueDrop       = "Outgoing messages are being dropped for client "
	prefixClient          = "Client "
	suffixTakeover        = " already connected, closing old connection."
	infixErrno            = " disconnected: "
)

// disconnectSuffixes are the fixed endings of "Client %s ..." lines that
// end a connection (loop.c do_disconnect in 2.0.11). None is a suffix of
// another, so anchoring at the end of the line gives exactly one id.
var disconnectSuffixes = []string{
	" disconnected.",
	" closed its connection.",
	" has exceeded timeout, disconnecting.",
	" disconnected due to malformed packet.",
	" disconnected due to protocol error.",
	" disconnected due to oversize packet.",
	" disconnected due to oversize payload.",
	" disconnected due to out of memory.",
	" disconnected due to QoS too high or retain not supported.",
	" disconnected, not authorised.",
	" been disconnected by administrative action.",
}

// parseInfo handles $SYS/broker/log/I: of its lines only the clean stop of
// the broker and the saving of its database matter (persist_write.c,
// mosquitto.c in 2.0.11).
func parseInfo(text string) (Event, error) {
	switch {
	case strings.HasPrefix(text, "mosquitto version ") && strings.HasSuffix(text, " terminating"):
		return Event{Kind: Stopping}, nil
	case strings.HasPrefix(text, "Saving in-memory database to "):
		return Event{Kind: Saved}, nil
	}
	return Event{Kind: Ignored}, nil
}

// parseNotice handles $SYS/broker/log/N: connects, disconnects, expiry.
func parseNotice(text string) (Event, error) {
	switch {
	case strings.HasPrefix(text, prefixClientConnected):
		return parseConnected(text[len(prefixClientConnected):], false)
	case strings.HasPrefix(text, prefixBridgeConnected):
		return parseConnected(text[len(prefixBridgeConnected):], true)
	case strings.HasPrefix(text, prefixExpiring):
		return parseExpiring(text)
	case strings.HasPrefix(text, prefixBadSocket):
		return parseBadSocket(text)
	case strings.HasPrefix(text, prefixQueueDrop):
		id, ok := strings.CutSuffix(text[len(prefixQueueDrop):], ".")
		if !ok || id == "" {
			return Event{}, malformed("queue drop", text)
		}
		return Event{Kind: QueueDropped, ClientID: id}, nil
	case strings.HasPrefix(text, prefixClient):
		return parseClientNotice(text)
	}
	return Event{Kind: Ignored}, nil
}

func parseExpiring(text string) (Event, error) {
	rest := text[len(prefixExpiring):]
	id, ok := strings.CutSuffix(rest, suffixExpiring)
	if !ok || id == "" {
		return Event{}, malformed("expiry", text)
	}
	return Event{Kind: Expired, ClientID: id}, nil
}

// parseBadSocket handles "Bad socket read/write on client %s: %s". The
// reason is a mosquitto_strerror text, which holds no ": ", so the id ends
// at the last one.
func parseBadSocket(text string) (Event, error) {
	rest := text[len(prefixBadSocket):]
	i := strings.LastIndex(rest, ": ")
	if i <= 0 {
		return Event{}, malformed("disconnect", text)
	}
	return Event{Kind: Disconnected, ClientID: rest[:i]}, nil
}

// parseClientNotice handles the "Client %s ..." notices: the disconnect
// variants, anchored at the end because ids may contain any of the words.
// Other "Client ..." notices (e.g. a too large will) are Ignored.
func parseClientNotice(text string) (Event, error) {
	rest := text[len(prefixClient):]
	for _, suffix := range disconnectSuffixes {
		if id, ok := strings.CutSuffix(rest, suffix); ok {
			return disconnected(id, text)
		}
	}
	// "Client %s disconnected: %s." with strerror(errno) as the reason; no
	// strerror text contains " disconnected: ", so the id ends at the last.
	if strings.HasSuffix(rest, ".") {
		if i := strings.LastIndex(rest, infixErrno); i >= 0 && i+len(infixErrno) < len(rest)-1 {
			return disconnected(rest[:i], text)
		}
	}
	return Event{Kind: Ignored}, nil
}

func disconnected(id, text string) (Event, error) {
	if id == "" {
		return Event{}, malformed("disconnect", text)
	}
	return Event{Kind: Disconnected, ClientID: id}, nil
}

// parseError handles $SYS/broker/log/E: the takeover line, and a stopping
// broker's failure to save its database.
func parseError(text string) (Event, error) {
	if strings.HasPrefix(text, "Error saving in-memory database") {
		return Event{Kind: SaveFailed}, nil
	}
	rest, ok := strings.CutPrefix(text, prefixClient)
	if !ok {
		return Event{Kind: Ignored}, nil
	}
	id, ok := strings.CutSuffix(rest, suffixTakeover)
	if !ok {
		return Event{Kind: Ignored}, nil
	}
	if id == "" {
		return Event{}, malformed("takeover", text)
	}
	return Event{Kind: Takeover, ClientID: id}, nil
}

// parseSubscribe checks that "<id> <qos> <filter>" can be split at least
// one way; which way is the Table's decision.
func parseSubscribe(text string) (Event, error) {
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' {
			if _, _, ok := cutQoS(text[i+1:]); ok {
				return Event{Kind: Subscribed, Rest: text}, nil
			}
		}
	}
	return Event{}, malformed("subscribe", text)
}

// parseUnsubscribe checks that "<id> <filter>" can be split at least one way.
func parseUnsubscribe(text string) (Event, error) {
	// A space neither first nor last separates a non-empty id and filter.
	if len(text) >= 3 && strings.IndexByte(text[1:len(text)-1], ' ') >= 0 {
		return Event{Kind: Unsubscribed, Rest: text}, nil
	}
	return Event{}, malformed("unsubscribe", text)
}

// cutQoS splits "<digits> <filter>" and returns a non-empty filter and the
// QoS (a value over 2 is read as 2: the broker grants at most 2).
func cutQoS(s string) (string, byte, bool) {
	i := digits(s)
	if i == 0 || i+1 >= len(s) || s[i] != ' ' {
		return "", 0, false
	}
	qos := byte(2)
	if i == 1 && s[0] < '2' {
		qos = s[0] - '0'
	}
	return s[i+1:], qos, true
}

func malformed(what, text string) error {
	return fmt.Errorf("%w: %s: %q", ErrMalformed, what, clip(text))
}

// clip keeps error messages short: a log line can be almost 1000 bytes.
func clip(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digits returns the length of the decimal number (as %d writes it: no
// leading zero) at the start of s, or 0 if there is none.
func digits(s string) int {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i > 1 && s[0] == '0' {
		return 0
	}
	return i
}
