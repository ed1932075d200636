package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Go != runtime.Version() {
		t.Fatalf("Get = %+v, want a version and Go %s", i, runtime.Version())
	}
	if s := i.String(); !strings.HasPrefix(s, "moha ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("String = %q", s)
	}
	if s := (Info{Version: "v1.2.3", Commit: "abc", Modified: true, Go: "go1.26"}).String(); s != "moha v1.2.3 commit abc (modified), go1.26" {
		t.Fatalf("String = %q", s)
	}
}
