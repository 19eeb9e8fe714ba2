package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
)

// docTypesFlag collects --document-types values: "user,invoice",
// "user:email,age", several joined with ';', the flag repeated, or (from a
// --config file's map) inline JSON {"user": ["email", "age"]}.
type docTypesFlag struct {
	specs []builtin.DocumentSpec
}

func (f *docTypesFlag) String() string {
	parts := make([]string, 0, len(f.specs))
	for _, s := range f.specs {
		p := s.Name
		if len(s.Indexes) > 0 {
			p += ":" + strings.Join(s.Indexes, ",")
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ";")
}

func (f *docTypesFlag) Type() string { return "types" }

func (f *docTypesFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "{") {
		var m map[string][]string
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return fmt.Errorf(`a document-types map is {type: [indexed fields]}, e.g. {"user": ["email"], "invoice": []}: %w`, err)
		}
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			f.specs = append(f.specs, builtin.DocumentSpec{Name: n, Indexes: m[n]})
		}
	} else {
		specs, err := builtin.ParseDocumentTypes(v)
		if err != nil {
			return err
		}
		f.specs = append(f.specs, specs...)
	}
	_, err := builtin.CheckDocumentSpecs(f.specs)
	return err
}

// registry is the node's actor registry: the built-in types and the
// declared document types.
func (f *docTypesFlag) registry() (*actor.Registry, error) {
	reg, err := builtin.RegistryWith(f.specs)
	if err != nil {
		return nil, fmt.Errorf("--document-types: %w", err)
	}
	return reg, nil
}
