package sdlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrCloudConfig is returned (wrapped) by ParseCloudConfig for a document
// the runner refuses: not a #cloud-config, malformed, or using a key the
// runner does not apply (so that nothing an example asks for is silently
// skipped).
var ErrCloudConfig = errors.New("sdlab: cloud-config")

// CloudConfig is the part of cloud-init's #cloud-config that the lab
// applies, the part vipkeeper's examples (packaging/cloud-init/) use.
// ParseCloudConfig refuses every other key.
type CloudConfig struct {
	Apt           *AptConfig  `yaml:"apt"`
	PackageUpdate bool        `yaml:"package_update"`
	Packages      []string    `yaml:"packages"`
	WriteFiles    []WriteFile `yaml:"write_files"`
	Runcmd        []Command   `yaml:"runcmd"`
}

// AptConfig is cloud-init's apt module: extra sources.
type AptConfig struct {
	// Sources by file name under /etc/apt/sources.list.d (".list" is
	// added when missing, as cloud-init does).
	Sources map[string]AptSource `yaml:"sources"`
}

// AptSource is one apt source: a sources.list line.
type AptSource struct {
	Source string `yaml:"source"`
}

// WriteFile is one entry of write_files.
type WriteFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`       // default root:root
	Permissions string `yaml:"permissions"` // octal, default 0644
	Content     string `yaml:"content"`
}

// Command is one runcmd entry: a string runs with sh -c, a list is the
// argv of a program, as cloud-init's runcmd does.
type Command struct {
	Shell string
	Argv  []string
}

// String shows the command the way a shell would take it.
func (c Command) String() string {
	if c.Shell != "" {
		return c.Shell
	}
	q := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, " ")
}

// UnmarshalYAML takes a scalar or a list of scalars.
func (c *Command) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&c.Shell)
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a runcmd argument must be a scalar", item.Line)
			}
		}
		return n.Decode(&c.Argv)
	}
	return fmt.Errorf("line %d: a runcmd entry is a string or a list of strings", n.Line)
}

var (
	rePackage = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	reOwner   = regexp.MustCompile(`^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$`)
	reSource  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	rePerm    = regexp.MustCompile(`^0?[0-7]{3,4}$`)
)

// ParseCloudConfig decodes a #cloud-config document (the header line is
// required), refusing keys the runner does not apply, and checks each
// entry: absolute paths, octal permissions, user:group owners, package
// and source file names, non-empty commands.
func ParseCloudConfig(data []byte) (*CloudConfig, error) {
	first, _, _ := bytes.Cut(data, []byte{'\n'})
	if string(bytes.TrimRight(first, "\r \t")) != "#cloud-config" {
		return nil, fmt.Errorf("%w: the first line is not #cloud-config", ErrCloudConfig)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cfg CloudConfig
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCloudConfig, err)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCloudConfig, err)
	}
	return &cfg, nil
}

func (cfg *CloudConfig) validate() error {
	for i := range cfg.WriteFiles {
		f := &cfg.WriteFiles[i]
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("write_files[%d]: path %q is not a clean absolute file path", i, f.Path)
		}
		if f.Owner == "" {
			f.Owner = "root:root"
		}
		if !reOwner.MatchString(f.Owner) {
			return fmt.Errorf("write_files[%d] %s: owner %q is not user[:group]", i, f.Path, f.Owner)
		}
		if f.Permissions == "" {
			f.Permissions = "0644"
		}
		if !rePerm.MatchString(f.Permissions) {
			return fmt.Errorf("write_files[%d] %s: permissions %q are not octal like \"0640\"", i, f.Path, f.Permissions)
		}
	}
	for _, p := range cfg.Packages {
		if !rePackage.MatchString(p) {
			return fmt.Errorf("packages: %q is not a package name", p)
		}
	}
	if cfg.Apt != nil {
		for name, src := range cfg.Apt.Sources {
			if !reSource.MatchString(name) {
				return fmt.Errorf("apt.sources: %q is not a file name", name)
			}
			if strings.TrimSpace(src.Source) == "" || strings.ContainsAny(src.Source, "\n\r") {
				return fmt.Errorf("apt.sources.%s: source must be one sources.list line", name)
			}
		}
	}
	for i, c := range cfg.Runcmd {
		if strings.TrimSpace(c.Shell) == "" && len(c.Argv) == 0 {
			return fmt.Errorf("runcmd[%d] is empty", i)
		}
		if len(c.Argv) > 0 && c.Argv[0] == "" {
			return fmt.Errorf("runcmd[%d]: empty program name", i)
		}
	}
	return nil
}

// aptGet is how cloud-init runs apt-get on Debian: keep a changed
// conffile, assume yes (DEBIAN_FRONTEND=noninteractive is in
// containerEnv).
var aptGet = []string{"apt-get", "--option=Dpkg::Options::=--force-confold", "--option=Dpkg::options::=--force-unsafe-io", "--assume-yes", "--quiet"}

// ApplyCloudConfig does inside the container what cloud-init does with
// cfg, in cloud-init's order: write_files (init stage), apt sources
// (config stage), then package update and install, then runcmd (final
// stage). Unlike cloud-init it stops at the first failing step and
// returns its error, so a broken example fails the test that runs it.
func (c *Container) ApplyCloudConfig(ctx context.Context, cfg *CloudConfig, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("container", c.Name, "op", "cloud-init")
	for _, f := range cfg.WriteFiles {
		mode, err := strconv.ParseUint(f.Permissions, 8, 32)
		if err != nil {
			return fmt.Errorf("sdlab: write_files %s: %w", f.Path, err)
		}
		log.Info("write_files", "path", f.Path, "owner", f.Owner, "mode", f.Permissions)
		if err := c.WriteFile(ctx, f.Path, []byte(f.Content), f.Owner, os.FileMode(mode)); err != nil {
			return fmt.Errorf("sdlab: write_files %s: %w", f.Path, err)
		}
	}
	if cfg.Apt != nil {
		for _, name := range slices.Sorted(maps.Keys(cfg.Apt.Sources)) {
			src := cfg.Apt.Sources[name]
			file := name
			if !strings.HasSuffix(file, ".list") {
				file += ".list"
			}
			p := "/etc/apt/sources.list.d/" + file
			log.Info("apt source", "path", p, "source", src.Source)
			if err := c.WriteFile(ctx, p, []byte(src.Source+"\n"), "root:root", 0o644); err != nil {
				return fmt.Errorf("sdlab: apt.sources.%s: %w", name, err)
			}
		}
	}
	if cfg.PackageUpdate || len(cfg.Packages) > 0 {
		log.Info("apt-get update")
		if _, err := c.Output(ctx, append(aptGet, "update")...); err != nil {
			return fmt.Errorf("sdlab: package_update: %w", err)
		}
	}
	if len(cfg.Packages) > 0 {
		log.Info("apt-get install", "packages", strings.Join(cfg.Packages, " "))
		if _, err := c.Output(ctx, append(append(aptGet, "install"), cfg.Packages...)...); err != nil {
			return fmt.Errorf("sdlab: packages: %w", err)
		}
	}
	for i, cmd := range cfg.Runcmd {
		log.Info("runcmd", "n", i, "cmd", cmd.String())
		argv := cmd.Argv
		if cmd.Shell != "" {
			argv = []string{"sh", "-c", cmd.Shell}
		}
		if _, err := c.Output(ctx, argv...); err != nil {
			return fmt.Errorf("sdlab: runcmd[%d] %s: %w", i, cmd, err)
		}
	}
	return nil
}
