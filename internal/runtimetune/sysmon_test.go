package runtimetune

import (
	"slices"
	"testing"
)

func TestReexecEnv(t *testing.T) {
	cases := []struct {
		name    string
		environ []string
		want    []string // nil: no re-exec
	}{
		{"no GODEBUG", []string{"A=1"}, []string{"A=1", "GODEBUG=" + SysmonSetting}},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + SysmonSetting, "A=1"}},
		{"other GODEBUG", []string{"GODEBUG=gctrace=1"}, []string{"GODEBUG=gctrace=1," + SysmonSetting}},
		{"set already", []string{"GODEBUG=" + SysmonSetting}, nil},
		{"operator opted out", []string{"GODEBUG=gctrace=1,schedtrace=0"}, nil},
	}
	for _, c := range cases {
		got, needed := reexecEnv(c.environ)
		if needed != (c.want != nil) || !slices.Equal(got, c.want) {
			t.Errorf("%s: reexecEnv(%q) = %q, %v; want %q", c.name, c.environ, got, needed, c.want)
		}
	}
}
