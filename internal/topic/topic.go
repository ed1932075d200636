// Package topic owns MQTT topic names and topic filters: their validation, the split of
// shared-subscription filters ($share/<group>/<filter>), the matching rules, and Trie, the
// reference-counted set of filters that answers "does anyone want this topic?" without
// allocating. It depends on the standard library only (like nats-server's server/gsl), so
// every other package can use it.
//
// Clause numbers in comments are those of the MQTT 3.1.1 specification (section 4.7) unless
// marked v5; both versions have the same matching rules.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidFilter is wrapped by every error about a malformed topic filter.
var ErrInvalidFilter = errors.New("topic: invalid filter")

// ErrInvalidTopic is wrapped by every error about a malformed topic name.
var ErrInvalidTopic = errors.New("topic: invalid topic name")

const (
	// maxLen is the longest topic name or filter: it travels as a UTF-8 string with a
	// two-byte length prefix [MQTT-4.7.3-3].
	maxLen = 65535
	// sharePrefix starts a shared subscription (MQTT v5 section 4.8.2).
	sharePrefix = "$share/"
	// shareLevel is the first level of every shared-subscription filter.
	shareLevel = "$share"
	// quoteMax bounds how much of a bad string goes into an error message.
	quoteMax = 64
)

// ValidateFilter reports why f is not a valid MQTT topic filter (wrapping ErrInvalidFilter),
// or nil. Rules: non-empty, at most 65535 bytes, valid UTF-8 without U+0000; '#' only as the
// whole last level; '+' only as a whole level. A shared-subscription filter ($share/...) is
// refused: split it with SplitShared first, so that a "$share" level never reaches a Trie
// where it would silently match nothing.
func ValidateFilter(f string) error {
	if reason := checkString(f); reason != "" {
		return invalid(ErrInvalidFilter, f, reason)
	}
	if firstLevel(f) == shareLevel {
		return invalid(ErrInvalidFilter, f, "shared subscription prefix (use SplitShared)")
	}
	for start := 0; start <= len(f); {
		end := levelEnd(f, start)
		if reason := checkFilterLevel(f[start:end], end == len(f)); reason != "" {
			return invalid(ErrInvalidFilter, f, reason)
		}
		start = end + 1
	}
	return nil
}

// checkFilterLevel explains why one level of a filter is malformed, or returns "".
func checkFilterLevel(level string, last bool) string {
	switch {
	case level == "#" && !last:
		// '#' MUST be the last character of the filter [MQTT-4.7.1-2 (v5: MQTT-4.7.1-1)].
		return "'#' is not the last level"
	case level != "#" && strings.Contains(level, "#"):
		// '#' MUST be on its own or follow a '/' [MQTT-4.7.1-2 (v5: MQTT-4.7.1-1)].
		return "'#' is not a whole level"
	case level != "+" && strings.Contains(level, "+"):
		// '+' MUST occupy an entire level [MQTT-4.7.1-3 (v5: MQTT-4.7.1-2)].
		return "'+' is not a whole level"
	}
	return ""
}

// ValidateTopic reports why t is not a valid topic name (wrapping ErrInvalidTopic), or nil:
// non-empty, at most 65535 bytes, valid UTF-8, no U+0000, no '+' or '#'.
func ValidateTopic(t string) error {
	if reason := checkString(t); reason != "" {
		return invalid(ErrInvalidTopic, t, reason)
	}
	// Wildcards MUST NOT be used within a topic name [MQTT-4.7.1-1 (v5: MQTT-4.7.0-1)].
	if strings.ContainsAny(t, "+#") {
		return invalid(ErrInvalidTopic, t, "contains a wildcard")
	}
	return nil
}

// checkString applies the rules shared by topic names and filters and explains a failure,
// or returns "".
func checkString(s string) string {
	switch {
	case s == "":
		// At least one character long [MQTT-4.7.3-1].
		return "empty"
	case len(s) > maxLen:
		return fmt.Sprintf("%d bytes, longer than %d", len(s), maxLen)
	case !utf8.ValidString(s):
		// Well-formed UTF-8, no surrogate code points [MQTT-1.5.3-1].
		return "not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		// No null character U+0000 [MQTT-4.7.3-2].
		return "contains U+0000"
	}
	return ""
}

// SplitShared splits "$share/<group>/<filter>" into (group, filter, true); it returns
// ("", f, false) for anything else. A "$share/" string with an empty group, a group holding a
// wildcard (v5 [MQTT-4.8.2-2]), no filter, or an invalid filter returns an error wrapping
// ErrInvalidFilter.
func SplitShared(f string) (group, filter string, shared bool, err error) {
	rest, ok := strings.CutPrefix(f, sharePrefix)
	if !ok {
		return "", f, false, nil
	}
	group, filter, ok = strings.Cut(rest, "/")
	switch {
	case group == "":
		return "", "", false, invalid(ErrInvalidFilter, f, "shared subscription without a group")
	case strings.ContainsAny(group, "+#"):
		return "", "", false, invalid(ErrInvalidFilter, f, "shared subscription group holds a wildcard")
	case !ok || filter == "":
		return "", "", false, invalid(ErrInvalidFilter, f, "shared subscription without a filter")
	}
	if err := ValidateFilter(filter); err != nil {
		return "", "", false, fmt.Errorf("shared subscription group %q: %w", group, err)
	}
	return group, filter, true, nil
}

// Match reports whether topic name t matches filter f. It is the plain reference matcher —
// the oracle the Trie is tested against — and expects a valid filter (see ValidateFilter).
func Match(f, t string) bool {
	fl, tl := strings.Split(f, "/"), strings.Split(t, "/")
	// A filter starting with a wildcard never matches a topic starting with '$' [MQTT-4.7.2-1].
	if strings.HasPrefix(t, "$") && (fl[0] == "+" || fl[0] == "#") {
		return false
	}
	for i, level := range fl {
		if level == "#" {
			// '#' matches any number of levels, zero included: "a/#" matches "a" [MQTT-4.7.1-2].
			return true
		}
		if i >= len(tl) {
			return false
		}
		// '+' matches exactly one level, an empty one too; other levels compare exactly
		// (case-sensitive, no normalisation [MQTT-4.7.3-4]).
		if level != "+" && level != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}

// levelEnd returns the index of the '/' that ends the level starting at start, or len(s).
func levelEnd(s string, start int) int {
	if i := strings.IndexByte(s[start:], '/'); i >= 0 {
		return start + i
	}
	return len(s)
}

// firstLevel returns s up to its first '/'.
func firstLevel(s string) string {
	return s[:levelEnd(s, 0)]
}

// invalid builds an error wrapping sentinel that quotes (the start of) s and the reason.
func invalid(sentinel error, s, reason string) error {
	if len(s) > quoteMax {
		s = s[:quoteMax] + "..."
	}
	return fmt.Errorf("%w %q: %s", sentinel, s, reason)
}
