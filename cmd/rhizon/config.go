package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// applyConfig fills every flag the user did not set, first from RHIZON_<FLAG>
// environment variables, then from the YAML file named by --config: flags win
// over the environment, which wins over the file.
func applyConfig(fs *pflag.FlagSet) error {
	var file map[string]any
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		b, err := os.ReadFile(f.Value.String())
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("config %s: %w", f.Value.String(), err)
		}
		for k := range file {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config %s: unknown key %q (keys are flag names, e.g. data-dir)", f.Value.String(), k)
			}
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" {
			return
		}
		env := "RHIZON_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if m, isMap := v.(map[string]any); isMap {
				// A nested section (quotas:) reaches its flag as inline JSON.
				b, e := json.Marshal(m)
				if e != nil {
					err = fmt.Errorf("config key %s: %w", f.Name, e)
					return
				}
				v = string(b)
			}
			if list, isList := v.([]any); isList {
				// A YAML list sets the flag once per element.
				for _, el := range list {
					if e := f.Value.Set(fmt.Sprint(el)); e != nil {
						err = fmt.Errorf("config key %s item %v: %w", f.Name, el, e)
						return
					}
				}
				return
			}
			if e := f.Value.Set(fmt.Sprint(v)); e != nil {
				err = fmt.Errorf("config key %s=%v: %w", f.Name, v, e)
			}
		}
	})
	return err
}
