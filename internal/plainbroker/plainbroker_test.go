package plainbroker

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigHasEachRule(t *testing.T) {
	text, err := Config(Options{Addr: "127.0.0.1:1883", Comment: "a test broker", User: "root", MaxQueued: 1234})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# a test broker\n", "listener 1883 127.0.0.1\n", "allow_anonymous true\n", "user root\n",
		"persistence false\n", "max_queued_messages 1234\n", "log_dest stderr\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasPrefix(text, "# a test broker\n") {
		t.Errorf("the comment is not the first line:\n%s", text)
	}
}

func TestConfigLeavesOutWhatIsNotAskedFor(t *testing.T) {
	text, err := Config(Options{Addr: "127.0.0.1:1883", MaxQueued: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, unwanted := range []string{"#", "user "} {
		if strings.Contains(text, unwanted) {
			t.Errorf("config has %q, not asked for:\n%s", unwanted, text)
		}
	}
}

func TestConfigAppendsExtraLines(t *testing.T) {
	extra := []string{"max_inflight_messages 1000", "sys_interval 1\nlog_type all"}
	text, err := Config(Options{Addr: "127.0.0.1:1883", MaxQueued: 1, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	if want := "max_inflight_messages 1000\nsys_interval 1\nlog_type all\n"; !strings.HasSuffix(text, want) {
		t.Errorf("config does not end with the extra lines %q:\n%s", want, text)
	}
}

func TestConfigKeepsTheAnonymousRuleOfExtra(t *testing.T) {
	text, err := Config(Options{Addr: "127.0.0.1:1883", MaxQueued: 1,
		Extra: []string{"allow_anonymous false", "password_file /tmp/pw"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(text, "allow_anonymous"); n != 1 || !strings.Contains(text, "allow_anonymous false\n") {
		t.Errorf("want extra's allow_anonymous false alone, got %d allow_anonymous lines:\n%s", n, text)
	}
}

func TestConfigRefusesBadOptions(t *testing.T) {
	if _, err := Config(Options{Addr: "no-port", MaxQueued: 1}); err == nil {
		t.Error("accepted an address without a port")
	}
	if _, err := Config(Options{Addr: "127.0.0.1:1883"}); !errors.Is(err, errQueueDepth) {
		t.Errorf("no queue depth: %v, want %v", err, errQueueDepth)
	}
}
