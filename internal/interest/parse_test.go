package interest

import (
	"errors"
	"strings"
	"testing"
)

const ts = "1700000000: "

func connectedEv(id string, protocol int, clean bool, keepAlive int, user string) Event {
	return Event{Kind: Connected, Time: 1700000000, ClientID: id, Protocol: protocol, Clean: clean, KeepAlive: keepAlive, Username: user}
}

func clientEv(kind Kind, id string) Event {
	return Event{Kind: kind, Time: 1700000000, ClientID: id}
}

func restEv(kind Kind, rest string) Event {
	return Event{Kind: kind, Time: 1700000000, Rest: rest}
}

var ignored = Event{Kind: Ignored, Time: 1700000000}

func TestParseLine(t *testing.T) {
	bridge := connectedEv("bridge-n2", 4, false, 60, "")
	bridge.Bridge = true
	bridgeUser := connectedEv("br 1", 5, true, 30, "bu")
	bridgeUser.Bridge = true

	tests := []struct {
		name, topic, text string
		want              Event
	}{
		// Connects, as the broker writes them (seen on the real broker).
		{"connect v5", TopicNotice, "New client connected from 127.0.0.1:5555 as c1 (p5, c1, k60).", connectedEv("c1", 5, true, 60, "")},
		{"connect v3.1.1 persistent", TopicNotice, "New client connected from 127.0.0.1:56286 as c2 (p2, c0, k0).", connectedEv("c2", 4, false, 0, "")},
		{"connect v3.1", TopicNotice, "New client connected from 127.0.0.1:5555 as c3 (p1, c0, k65535).", connectedEv("c3", 3, false, 65535, "")},
		{"connect user and spaces", TopicNotice, "New client connected from 127.0.0.1:37110 as id with 1 spaces (p5, c0, k60, u'us er').", connectedEv("id with 1 spaces", 5, false, 60, "us er")},
		{"connect ipv6 bare", TopicNotice, "New client connected from ::1:5555 as c1 (p5, c1, k60).", connectedEv("c1", 5, true, 60, "")},
		{"connect ipv6 brackets", TopicNotice, "New client connected from [::1]:5555 as c1 (p5, c1, k60).", connectedEv("c1", 5, true, 60, "")},
		{"connect ipv6 zone", TopicNotice, "New client connected from fe80::1%eth0:5555 as c1 (p2, c1, k10, u'u').", connectedEv("c1", 4, true, 10, "u")},
		{"connect id looks like flags", TopicNotice, "New client connected from 1.2.3.4:1 as x (p1, c0, k5) y (p5, c1, k60).", connectedEv("x (p1, c0, k5) y", 5, true, 60, "")},
		{"connect id ends like flags", TopicNotice, "New client connected from 1.2.3.4:1 as x (p1, c0, k5). (p5, c1, k60).", connectedEv("x (p1, c0, k5).", 5, true, 60, "")},
		{"connect id with as", TopicNotice, "New client connected from 1.2.3.4:1 as a as b (p5, c1, k60).", connectedEv("a as b", 5, true, 60, "")},
		{"connect user looks like flags", TopicNotice, "New client connected from 1.2.3.4:1 as c (p5, c1, k60, u'a (p2, c0, k1, u'b')').", connectedEv("c", 5, true, 60, "a (p2, c0, k1, u'b')")},
		{"connect user with quote", TopicNotice, "New client connected from 1.2.3.4:1 as c (p5, c1, k60, u'o'brien').", connectedEv("c", 5, true, 60, "o'brien")},
		{"connect empty user", TopicNotice, "New client connected from 1.2.3.4:1 as c (p5, c1, k60, u'').", connectedEv("c", 5, true, 60, "")},
		{"connect id disconnected", TopicNotice, "New client connected from 1.2.3.4:1 as Client x disconnected. (p5, c1, k60).", connectedEv("Client x disconnected.", 5, true, 60, "")},
		{"bridge", TopicNotice, "New bridge connected from 10.0.0.2:40000 as bridge-n2 (p2, c0, k60).", bridge},
		{"bridge user", TopicNotice, "New bridge connected from 10.0.0.2:40000 as br 1 (p5, c1, k30, u'bu').", bridgeUser},

		// Every disconnect variant of loop.c do_disconnect, anchored at the end.
		{"disconnected", TopicNotice, "Client c1 disconnected.", clientEv(Disconnected, "c1")},
		{"disconnected spaces", TopicNotice, "Client id with 1 spaces disconnected.", clientEv(Disconnected, "id with 1 spaces")},
		{"disconnected id has the word", TopicNotice, "Client a disconnected. disconnected.", clientEv(Disconnected, "a disconnected.")},
		{"disconnected id has another suffix", TopicNotice, "Client b closed its connection. disconnected.", clientEv(Disconnected, "b closed its connection.")},
		{"closed", TopicNotice, "Client c1 closed its connection.", clientEv(Disconnected, "c1")},
		{"keepalive", TopicNotice, "Client c1 has exceeded timeout, disconnecting.", clientEv(Disconnected, "c1")},
		{"malformed packet", TopicNotice, "Client c1 disconnected due to malformed packet.", clientEv(Disconnected, "c1")},
		{"protocol error", TopicNotice, "Client c 1 disconnected due to protocol error.", clientEv(Disconnected, "c 1")},
		{"oversize packet", TopicNotice, "Client c1 disconnected due to oversize packet.", clientEv(Disconnected, "c1")},
		{"oversize payload", TopicNotice, "Client c1 disconnected due to oversize payload.", clientEv(Disconnected, "c1")},
		{"out of memory", TopicNotice, "Client c1 disconnected due to out of memory.", clientEv(Disconnected, "c1")},
		{"not supported", TopicNotice, "Client c1 disconnected due to QoS too high or retain not supported.", clientEv(Disconnected, "c1")},
		{"not authorised", TopicNotice, "Client c1 disconnected, not authorised.", clientEv(Disconnected, "c1")},
		{"administrative", TopicNotice, "Client c1 been disconnected by administrative action.", clientEv(Disconnected, "c1")},
		{"errno", TopicNotice, "Client c1 disconnected: Connection reset by peer.", clientEv(Disconnected, "c1")},
		{"errno id has infix", TopicNotice, "Client a disconnected: b disconnected: Broken pipe.", clientEv(Disconnected, "a disconnected: b")},
		{"bad socket", TopicNotice, "Bad socket read/write on client c1: The client is not currently connected.", clientEv(Disconnected, "c1")},
		{"bad socket id has colon", TopicNotice, "Bad socket read/write on client a: b: Unknown error.", clientEv(Disconnected, "a: b")},
		{"unknown id", TopicNotice, "Client <unknown> closed its connection.", clientEv(Disconnected, "<unknown>")},
		{"expiry", TopicNotice, "Expiring client c 1 due to timeout.", clientEv(Expired, "c 1")},

		// Other notices carry nothing about sessions.
		{"tcp accept", TopicNotice, "New connection from 127.0.0.1:5555 on port 1883.", ignored},
		{"tcp accept ipv6", TopicNotice, "New connection from ::1:5555 on port 1883.", ignored},
		{"startup", TopicNotice, "mosquitto version 2.0.11 running", ignored},
		{"queue overflow", TopicNotice, "Outgoing messages are being dropped for client c 1.", Event{Kind: QueueDropped, ClientID: "c 1", Time: 1700000000}},
		{"too large will", TopicNotice, "Client c1 connected with too large Will payload", ignored},
		{"multiple connect", TopicNotice, "Bad client c1 sending multiple CONNECT messages.", ignored},
		{"connection failed", TopicNotice, "Client connection from 1.2.3.4 failed: Connection reset by peer.", ignored},
		{"denied", TopicNotice, "Client connection from 1.2.3.4 denied: max_connections exceeded.", ignored},

		// Errors: only the takeover matters.
		{"takeover", TopicError, "Client c3 already connected, closing old connection.", clientEv(Takeover, "c3")},
		{"takeover spaces", TopicError, "Client a b already connected, closing old connection.", clientEv(Takeover, "a b")},
		{"other error", TopicError, "Error: Unable to write to socket.", ignored},
		{"other client error", TopicError, "Client c1 did something else.", ignored},

		// Subscriptions: the split is the Table's job.
		{"subscribe", TopicSubscribe, "c2 2 x", restEv(Subscribed, "c2 2 x")},
		{"subscribe spaces", TopicSubscribe, "id with 1 spaces 1 topic with space/+", restEv(Subscribed, "id with 1 spaces 1 topic with space/+")},
		{"subscribe shared", TopicSubscribe, "id 1 $share/g/a b", restEv(Subscribed, "id 1 $share/g/a b")},
		{"subscribe sys", TopicSubscribe, "logger 0 $SYS/broker/log/#", restEv(Subscribed, "logger 0 $SYS/broker/log/#")},
		{"unsubscribe", TopicUnsubscribe, "c3 x/#", restEv(Unsubscribed, "c3 x/#")},
		{"unsubscribe spaces", TopicUnsubscribe, "a b c d", restEv(Unsubscribed, "a b c d")},

		// Topics outside the families are ignored whatever they carry.
		{"stopping", TopicInfo, "mosquitto version 2.0.11 terminating", Event{Kind: Stopping, Time: 1700000000}},
		{"saved", TopicInfo, "Saving in-memory database to /var/lib/mosquitto//mosquitto.db.", Event{Kind: Saved, Time: 1700000000}},
		{"save failed", TopicError, "Error saving in-memory database, unable to open /x/mosquitto.db.new for writing.", Event{Kind: SaveFailed, Time: 1700000000}},
		{"other information", TopicInfo, "Opening ipv4 listen socket on port 1883.", Event{Kind: Ignored, Time: 1700000000}},
		{"warning", "$SYS/broker/log/W", "1: Warning: x", Event{Kind: Ignored}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine(tc.topic, []byte(ts+tc.text))
			if err != nil {
				t.Fatalf("ParseLine(%q): %v", tc.text, err)
			}
			if tc.want.Kind == Connected {
				// The address as logged, between "from " and " as ".
				_, after, _ := strings.Cut(tc.text, " from ")
				tc.want.From, _, _ = strings.Cut(after, " as ")
			}
			if got != tc.want {
				t.Fatalf("ParseLine(%q)\n got %+v\nwant %+v", tc.text, got, tc.want)
			}
		})
	}
}

func TestParseLineMalformed(t *testing.T) {
	tests := []struct{ name, topic, payload string }{
		{"no timestamp", TopicNotice, "New client connected from 1.2.3.4:1 as c (p5, c1, k60)."},
		{"bad timestamp", TopicSubscribe, "17x: c 0 a"},
		{"timestamp overflow", TopicSubscribe, "99999999999999999999: c 0 a"},
		{"empty", TopicSubscribe, ""},
		{"unknown protocol", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p9, c1, k60)."},
		{"mqtt-sn protocol", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p3, c1, k60)."},
		{"bad clean flag", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p5, c2, k60)."},
		{"keepalive too big", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p5, c1, k70000)."},
		{"keepalive too long", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p5, c1, k000060)."},
		{"no period", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p5, c1, k60)"},
		{"empty id", TopicNotice, ts + "New client connected from 1.2.3.4:1 as  (p5, c1, k60)."},
		{"no port", TopicNotice, ts + "New client connected from localhost as c (p5, c1, k60)."},
		{"no as", TopicNotice, ts + "New client connected from 1.2.3.4:1 c (p5, c1, k60)."},
		{"user unterminated", TopicNotice, ts + "New client connected from 1.2.3.4:1 as c (p5, c1, k60, u'x)."},
		{"no flags", TopicNotice, ts + "New bridge connected from 1.2.3.4:1 as c."},
		{"expiry no period", TopicNotice, ts + "Expiring client c due to timeout"},
		{"expiry empty id", TopicNotice, ts + "Expiring client  due to timeout."},
		{"bad socket no reason", TopicNotice, ts + "Bad socket read/write on client c1"},
		{"disconnect empty id", TopicNotice, ts + "Client  disconnected."},
		{"takeover empty id", TopicError, ts + "Client  already connected, closing old connection."},
		{"subscribe no qos", TopicSubscribe, ts + "c1 a/b"},
		{"subscribe no filter", TopicSubscribe, ts + "c1 1 "},
		{"subscribe id only", TopicSubscribe, ts + "c1"},
		{"subscribe empty id", TopicSubscribe, ts + " 1 a"},
		{"unsubscribe id only", TopicUnsubscribe, ts + "c1"},
		{"unsubscribe no filter", TopicUnsubscribe, ts + "c1 "},
		{"unsubscribe no id", TopicUnsubscribe, ts + " a"},
		{"truncated", TopicSubscribe, ts + "c1 0 " + strings.Repeat("a/", 500)},
		{"truncated notice", TopicNotice, ts + "Client " + strings.Repeat("i", 1000) + " disconnected."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLine(tc.topic, []byte(tc.payload))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseLine(%q) = %+v, %v; want ErrMalformed", tc.payload, got, err)
			}
		})
	}
}

// TestParseLineLimit: a payload just under Mosquitto's truncation size is
// trusted, one at the size is not.
func TestParseLineLimit(t *testing.T) {
	line := func(n int) []byte {
		head := ts + "c1 0 "
		return []byte(head + strings.Repeat("f", n-len(head)))
	}
	if ev, err := ParseLine(TopicSubscribe, line(maxLogPayload-1)); err != nil || ev.Kind != Subscribed {
		t.Fatalf("998-byte line: %+v, %v", ev, err)
	}
	if _, err := ParseLine(TopicSubscribe, line(maxLogPayload)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("999-byte line: err = %v, want ErrMalformed", err)
	}
}

func TestKindString(t *testing.T) {
	if Connected.String() != "connected" || Unsubscribed.String() != "unsubscribed" || Kind(42).String() != "kind(42)" {
		t.Fatalf("Kind.String: %s %s %s", Connected, Unsubscribed, Kind(42))
	}
}
