package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the cluster file at path, applies defaults and validates it. Relative file
// paths inside it (secret_file, TLS files) are resolved against the file's directory.
// The error lists every problem found, one per line.
func Load(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load cluster file: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load cluster file: %w", err)
	}
	c, err := Parse(data, dir)
	if err != nil {
		return nil, fmt.Errorf("cluster file %s:\n%w", path, err)
	}
	return c, nil
}

// Parse decodes a cluster file, applies defaults and validates it. Relative file paths
// inside it are resolved against baseDir (left relative when baseDir is ""). Unknown keys
// are errors naming the key and its line.
func Parse(data []byte, baseDir string) (*Cluster, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	c.ApplyDefaults()
	c.resolvePaths(baseDir)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// decode reads exactly one YAML document (or none: an empty file is an empty cluster,
// which Validate then explains) into a Cluster, refusing unknown keys.
func decode(data []byte) (*Cluster, error) {
	var c Cluster
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, decodeError(err)
		}
		return nil, fmt.Errorf("%w: line %d: a cluster file holds one YAML document, found another", ErrInvalid, extra.Line)
	}
	return &c, nil
}

// unknownField matches yaml.v3's message for a key the struct does not have.
var unknownField = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)

// decodeError turns yaml.v3 errors into one error per problem, wrapping ErrInvalid, with
// unknown keys said plainly rather than in terms of Go types.
func decodeError(err error) error {
	var typeErr *yaml.TypeError
	if !errors.As(err, &typeErr) {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	problems := make([]error, 0, len(typeErr.Errors))
	for _, msg := range typeErr.Errors {
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("line %s: unknown key %q", m[1], m[2])
		}
		problems = append(problems, fmt.Errorf("%w: %s", ErrInvalid, msg))
	}
	return errors.Join(problems...)
}

// resolvePaths makes the file paths in c relative to baseDir absolute, so the cluster
// means the same wherever the process using it runs.
func (c *Cluster) resolvePaths(baseDir string) {
	resolve := func(p *string) {
		if *p != "" && baseDir != "" && !filepath.IsAbs(*p) && !strings.ContainsRune(*p, 0) {
			*p = filepath.Join(baseDir, *p)
		}
	}
	resolve(&c.SecretFile)
	resolveTLS(c.LinkTLS, resolve)
	for i := range c.Nodes {
		resolveTLS(c.Nodes[i].Broker.TLS, resolve)
		if t := c.Nodes[i].ClientTLS; t != nil {
			resolve(&t.Cert)
			resolve(&t.Key)
			resolve(&t.CA)
		}
	}
}

func resolveTLS(t *TLSFiles, resolve func(*string)) {
	if t == nil {
		return
	}
	resolve(&t.CA)
	resolve(&t.Cert)
	resolve(&t.Key)
}
