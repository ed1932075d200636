package bench

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultOptionsAreValid(t *testing.T) {
	for _, s := range Scenarios {
		o, err := DefaultOptions(s)
		if err != nil {
			t.Fatalf("DefaultOptions(%q): %v", s, err)
		}
		if err := o.Validate(); err != nil {
			t.Errorf("DefaultOptions(%q).Validate: %v", s, err)
		}
		if !strings.HasPrefix(o.ClientPrefix, "moha-bench-") {
			t.Errorf("%s: ClientPrefix %q", s, o.ClientPrefix)
		}
	}
	a, _ := DefaultOptions(ScenarioSeed)
	b, _ := DefaultOptions(ScenarioSeed)
	if a.ClientPrefix == b.ClientPrefix {
		t.Errorf("two runs share the client prefix %q", a.ClientPrefix)
	}
	if a.Publishers != 20 || a.Subscribers != 500 || a.Messages != 3000 || a.Size != 100 ||
		a.QoS != 1 || a.Topic != "test_1/499" || a.Pipeline != 1 || a.Timeout != 10*time.Second {
		t.Errorf("seed defaults differ from the original experiment: %+v", a)
	}
}

func TestDefaultOptionsUnknownScenario(t *testing.T) {
	_, err := DefaultOptions("nope")
	if !errors.Is(err, ErrUnknownScenario) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v, want ErrUnknownScenario naming the scenario", err)
	}
}

func TestValidateRejects(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"qos 3", func(o *Options) { o.QoS = 3 }, "QoS: 3"},
		{"size below header", func(o *Options) { o.Size = HeaderSize - 1 }, "Size: 27 bytes, must be between 28"},
		{"no urls", func(o *Options) { o.URLs = nil }, "URLs: at least one endpoint"},
		{"bad url", func(o *Options) { o.URLs = []string{"127.0.0.1"} }, "URLs:"},
		{"bad scheme", func(o *Options) { o.URLs = []string{"ssl://127.0.0.1:8883"} }, `scheme "ssl"`},
		{"bad port", func(o *Options) { o.URLs = []string{"127.0.0.1:99999"} }, "bad port"},
		{"bad subscriber url", func(o *Options) { o.SubscriberURLs = []string{"x"} }, "URLs:"},
		{"unknown scenario", func(o *Options) { o.Scenario = "x" }, `Scenario: unknown "x"`},
		{"no publishers", func(o *Options) { o.Publishers = 0 }, "Publishers: 0"},
		{"no subscribers", func(o *Options) { o.Subscribers = 0 }, "Subscribers: 0"},
		{"no messages", func(o *Options) { o.Messages = 0 }, "Messages: 0"},
		{"wildcard topic", func(o *Options) { o.Topic = "a/+" }, "Topic:"},
		{"empty topic", func(o *Options) { o.Topic = "" }, `Topic: topic: invalid topic name "": empty`},
		{"nul in topic", func(o *Options) { o.Topic = "a/\x00" }, "contains U+0000"},
		{"topic not utf-8", func(o *Options) { o.Topic = "a/\xff" }, "not valid UTF-8"},
		{"topic too long", func(o *Options) { o.Topic = "a/" + strings.Repeat("x", 60000) }, "60002 bytes, longer than 60000"},
		{"seed topic without level", func(o *Options) { o.Topic = "flat" }, "seed needs a topic with a '/'"},
		{"pipeline 0", func(o *Options) { o.Pipeline = 0 }, "Pipeline: 0"},
		{"timeout 0", func(o *Options) { o.Timeout = 0 }, "Timeout: 0s"},
		{"prefix with slash", func(o *Options) { o.ClientPrefix = "a/b" }, "ClientPrefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := DefaultOptions(ScenarioSeed)
			tc.change(&o)
			err := o.Validate()
			if !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Validate = %v, want ErrInvalidOptions", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	o, _ := DefaultOptions(ScenarioSeed)
	o.URLs, o.QoS, o.Size = nil, 3, 1
	err := o.Validate()
	for _, want := range []string{"URLs", "QoS", "Size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want a problem about %s", err, want)
		}
	}
}

func TestNormalizeAddress(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://127.0.0.1:1883":  "127.0.0.1:1883",
		"mqtt://localhost:1884": "localhost:1884",
		"127.0.0.1:1883":        "127.0.0.1:1883",
		"tcp://[::1]:1883/":     "[::1]:1883",
	} {
		got, err := normalizeAddress(in)
		if err != nil || got != want {
			t.Errorf("normalizeAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
