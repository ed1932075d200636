package interest

import (
	"strconv"
	"strings"
)

// parseConnected parses what follows "New client connected from " (or the
// bridge variant):
//
//	<addr>:<port> as <id> (p%d, c%d, k%d).
//	<addr>:<port> as <id> (p%d, c%d, k%d, u'<username>').
//
// The address holds no space (IPv4, bare IPv6 "::1:5555" as Mosquitto prints
// it, or bracketed "[::1]:5555"). The id may contain anything, so the flags
// are anchored at the end of the line: the two forms are told apart by
// their last characters (a digit or a quote before ")."). Without a
// username the flags are the last " (p" of the line. With one, the id and
// the username could both contain the flags' text; the leftmost " (p" that
// parses wins, i.e. a strange username is preferred to a strange id.
func parseConnected(rest string, bridge bool) (Event, error) {
	sp := strings.IndexByte(rest, ' ')
	if sp < 0 || !validAddress(rest[:sp]) || !strings.HasPrefix(rest[sp:], " as ") {
		return Event{}, malformed("connect", rest)
	}
	body := rest[sp+len(" as "):]
	var ev Event
	var ok bool
	switch {
	case strings.HasSuffix(body, "')."):
		ev, ok = parseConnectedUser(body)
	case strings.HasSuffix(body, ")."):
		ev, ok = parseConnectedPlain(body)
	}
	if !ok {
		return Event{}, malformed("connect", rest)
	}
	ev.Kind = Connected
	ev.Bridge = bridge
	ev.From = rest[:sp]
	return ev, nil
}

// parseConnectedPlain parses "<id> (p%d, c%d, k%d).".
func parseConnectedPlain(body string) (Event, bool) {
	i := strings.LastIndex(body, " (p")
	if i <= 0 {
		return Event{}, false
	}
	ev, tail, ok := parseFlags(body[i+len(" (p"):])
	if !ok || tail != ")." {
		return Event{}, false
	}
	ev.ClientID = body[:i]
	return ev, true
}

// parseConnectedUser parses "<id> (p%d, c%d, k%d, u'<username>').".
func parseConnectedUser(body string) (Event, bool) {
	const userOpen, userClose = ", u'", "')."
	for from := 1; from < len(body); {
		i := strings.Index(body[from:], " (p")
		if i < 0 {
			return Event{}, false
		}
		i += from
		from = i + 1
		ev, tail, ok := parseFlags(body[i+len(" (p"):])
		if !ok || !strings.HasPrefix(tail, userOpen) || len(tail) < len(userOpen)+len(userClose) ||
			!strings.HasSuffix(tail, userClose) {
			continue
		}
		ev.ClientID = body[:i]
		ev.Username = tail[len(userOpen) : len(tail)-len(userClose)]
		return ev, true
	}
	return Event{}, false
}

// parseFlags parses "%d, c%d, k%d" (what follows "(p") and returns the rest.
func parseFlags(s string) (Event, string, bool) {
	p, s, ok := cutNumber(s, 1)
	if !ok {
		return Event{}, "", false
	}
	protocol, known := protocolVersion(p)
	if !known {
		return Event{}, "", false
	}
	s, ok = strings.CutPrefix(s, ", c")
	if !ok || len(s) == 0 || (s[0] != '0' && s[0] != '1') {
		return Event{}, "", false
	}
	clean := s[0] == '1'
	s, ok = strings.CutPrefix(s[1:], ", k")
	if !ok {
		return Event{}, "", false
	}
	keepAlive, s, ok := cutNumber(s, 5)
	if !ok || keepAlive > 65535 {
		return Event{}, "", false
	}
	return Event{Protocol: protocol, Clean: clean, KeepAlive: keepAlive}, s, true
}

// protocolVersion maps Mosquitto's protocol enum (p%d) to the MQTT
// protocol level: mosq_p_mqtt31 = 1, mosq_p_mqtt311 = 2, mosq_p_mqtt5 = 5.
func protocolVersion(p int) (int, bool) {
	switch p {
	case 1:
		return 3, true
	case 2:
		return 4, true
	case 5:
		return 5, true
	}
	return 0, false
}

// cutNumber reads a number as printf's %d writes it: 1..maxDigits decimal
// digits, no leading zero.
func cutNumber(s string, maxDigits int) (int, string, bool) {
	i := digits(s)
	if i == 0 || i > maxDigits {
		return 0, "", false
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil {
		return 0, "", false
	}
	return n, s[i:], true
}

// validAddress checks "<host>:<port>" loosely: Mosquitto prints the peer
// address as it has it, without brackets for IPv6.
func validAddress(addr string) bool {
	i := strings.LastIndexByte(addr, ':')
	if i <= 0 {
		return false
	}
	_, rest, ok := cutNumber(addr[i+1:], 5)
	return ok && rest == ""
}
