package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/server"
)

// File is the YAML file --config names: per-command verdict policies (default, commands) and who may
// call the bridge (callers, subscribers). Every key is documented in the README.
type File struct {
	server.Policies `yaml:",inline"`
	Auth            auth.Config `yaml:",inline"`
}

// LoadFile reads and checks the file. Unknown keys are errors, so that a typo is not ignored.
func LoadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if err := f.Policies.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if _, err := auth.New(f.Auth); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &f, nil
}
