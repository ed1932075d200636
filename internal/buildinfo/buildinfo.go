// Package buildinfo owns what a moha binary says about itself: its module
// version, the commit it was built from and the Go version, as the Go
// toolchain recorded them.
package buildinfo

import (
	"runtime/debug"
)

// Info describes the running binary.
type Info struct {
	Version  string `json:"version"`            // module version; "(devel)" for a build from a checkout
	Commit   string `json:"commit,omitempty"`   // VCS revision, when built from a checkout
	Modified bool   `json:"modified,omitempty"` // the checkout had uncommitted changes
	Go       string `json:"go"`                 // Go version that built it
}

// Get returns the running binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	info := Info{Version: bi.Main.Version, Go: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line for `moha version` and logs.
func (i Info) String() string {
	s := "moha " + i.Version
	if i.Commit != "" {
		s += " commit " + i.Commit
		if i.Modified {
			s += " (modified)"
		}
	}
	return s + ", " + i.Go
}
