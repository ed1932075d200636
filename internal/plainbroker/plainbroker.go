// Package plainbroker owns the configuration of a plain Mosquitto: one
// broker on its own, not a cluster node (a node's broker is
// internal/render's). `moha bench compare` runs it as the baseline moha is
// measured against (internal/bench), and tests run it as their private
// broker (internal/testkit). It imports the standard library only: testkit
// is imported by render's in-package tests, so a project import here could
// close an import cycle.
package plainbroker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Options describe one plain broker.
type Options struct {
	// Addr is the listener's host:port.
	Addr string
	// Comment, when set, is the config's first line, as a comment.
	Comment string
	// User is the account mosquitto keeps running as when started as root
	// (its `user` option); "" leaves mosquitto's default. RunAs gives it.
	User string
	// MaxQueued is each client's queue depth (max_queued_messages); it must
	// be positive.
	MaxQueued int
	// Extra lines are appended as they are; a line may hold several.
	Extra []string
}

// errQueueDepth is returned for a MaxQueued that is not positive.
var errQueueDepth = errors.New("plainbroker: the queue depth must be positive")

// Config renders the broker's mosquitto.conf: a listener on o.Addr,
// anonymous access unless o.Extra sets allow_anonymous, no persistence, a
// deep queue, logs on stderr, then o.Extra.
func Config(o Options) (string, error) {
	host, port, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return "", fmt.Errorf("plainbroker: broker address %q: %w", o.Addr, err)
	}
	if o.MaxQueued <= 0 {
		return "", fmt.Errorf("%w: %d", errQueueDepth, o.MaxQueued)
	}
	var lines []string
	if o.Comment != "" {
		lines = append(lines, "# "+o.Comment)
	}
	lines = append(lines, fmt.Sprintf("listener %s %s", port, host))
	if !setsAnonymous(o.Extra) {
		// mosquitto 2 refuses clients without a username by default; the
		// callers' clients have none.
		lines = append(lines, "allow_anonymous true")
	}
	if o.User != "" {
		lines = append(lines, "user "+o.User)
	}
	// A broker per run or per test: nothing is to survive it.
	lines = append(lines, "persistence false")
	// mosquitto's default depth (1000) drops silently behind a burst, which
	// a benchmark or a test would read as messages lost: queue them instead.
	lines = append(lines, fmt.Sprintf("max_queued_messages %d", o.MaxQueued))
	// The caller keeps the broker's stderr (a log file, a test's buffer).
	lines = append(lines, "log_dest stderr")
	lines = append(lines, o.Extra...)
	return strings.Join(lines, "\n") + "\n", nil
}

// setsAnonymous reports whether extra decides allow_anonymous itself.
func setsAnonymous(extra []string) bool {
	return strings.Contains(strings.Join(extra, "\n"), "allow_anonymous")
}

// RunAs returns the account for Options.User: "root" when this process runs
// as root, "" otherwise. Started as root, mosquitto drops to the account
// "mosquitto", which cannot use the files in the caller's temporary
// directory (a temporary directory is private to its owner); told `user
// root`, it stays root. Started by anyone else it cannot switch accounts,
// so the option is not needed.
func RunAs() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	return ""
}
