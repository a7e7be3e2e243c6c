#include <string.h>

#include "cli/cli.h"

void cli_model_opts_init(cli_model_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->dropout = o->stochastic_depth = -1.0f;
}

int cli_effnet_opts_parse(const char *C, cli_model_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v;
    if (strcmp(a, "--phi") && strcmp(a, "--width-mult") && strcmp(a, "--depth-mult") &&
        strcmp(a, "--resolution") && strcmp(a, "--dropout") && strcmp(a, "--stochastic-depth"))
        return 0;
    if (!(v = cli_value(C, argc, argv, i))) return -1;
    int bad;
    if (!strcmp(a, "--phi")) bad = cli_double(C, a, v, -10, 12, &o->phi);
    else if (!strcmp(a, "--width-mult")) bad = cli_double(C, a, v, 0.05, 16, &o->width_mult);
    else if (!strcmp(a, "--depth-mult")) bad = cli_double(C, a, v, 0.05, 16, &o->depth_mult);
    else if (!strcmp(a, "--resolution")) bad = cli_int(C, a, v, 8, 16384, &o->resolution);
    else if (!strcmp(a, "--dropout")) bad = cli_float(C, a, v, 0, 1, &o->dropout);
    else bad = cli_float(C, a, v, 0, 1, &o->stochastic_depth);
    return bad ? -1 : 1;
}

void cli_effnet_config(const cli_model_opts *o, cn_model_config *cfg) {
    cfg->phi = o->phi;
    cfg->width_mult = o->width_mult;
    cfg->depth_mult = o->depth_mult;
    cfg->resolution = o->resolution;
    cfg->dropout = o->dropout;
    cfg->stochastic_depth = o->stochastic_depth;
}

int cli_model_opts_parse(const char *C, const char *help, cli_model_opts *o, int argc,
                         char **argv, int *i) {
    const char *a = argv[*i], *v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        fputs(help, stdout);
        return CLI_HELP;
    }
    if (!strcmp(a, "--json")) {
        o->json = 1;
        return 1;
    }
    if (!strcmp(a, "--model") || !strcmp(a, "--in-channels") || !strcmp(a, "--num-classes") ||
        !strcmp(a, "--threads") || !strcmp(a, "--input-size") || !strcmp(a, "--batch") ||
        !strcmp(a, "--seed")) {
        if (!(v = cli_value(C, argc, argv, i))) return -1;
        if (!strcmp(a, "--model")) o->name = v;
        else if (!strcmp(a, "--in-channels")) return cli_int(C, a, v, 1, 4096, &o->in_channels) ? -1 : 1;
        else if (!strcmp(a, "--num-classes")) return cli_int(C, a, v, 1, 1000000, &o->num_classes) ? -1 : 1;
        else if (!strcmp(a, "--threads")) return cli_int(C, a, v, 1, 1024, &o->threads) ? -1 : 1;
        else if (!strcmp(a, "--input-size")) return cli_size(C, a, v, &o->h, &o->w) ? -1 : 1;
        else if (!strcmp(a, "--batch")) return cli_int(C, a, v, 1, 65536, &o->batch) ? -1 : 1;
        else if (!strcmp(a, "--seed")) {
            o->seed_set = 1;
            return cli_u64(C, a, v, &o->seed) ? -1 : 1;
        }
        return 1;
    }
    int r = cli_effnet_opts_parse(C, o, argc, argv, i);
    if (r) return r;
    if (a[0] != '-' && !o->path) {
        o->path = a;
        return 1;
    }
    return 0;
}

int cli_model_open(const char *C, cli_model_opts *o, cn_model **m) {
    cn_model_config cfg;
    cn_model_config_default(&cfg);
    cfg.name = o->name;
    cfg.in_channels = o->in_channels;
    cfg.num_classes = o->num_classes;
    cfg.threads = o->threads;
    cfg.seed = o->seed;
    cli_effnet_config(o, &cfg);
    cn_status st;
    if (o->path) {
        if (o->in_channels || o->num_classes || o->phi != 0 || o->width_mult != 0 ||
            o->depth_mult != 0 || o->resolution || o->dropout >= 0 || o->stochastic_depth >= 0) {
            cli_err(C, "--in-channels, --num-classes and the EfficientNet scaling options describe "
                       "a fresh model; %s has its own",
                    o->path);
            return EXIT_USAGE;
        }
        st = cn_model_load(m, o->path, &cfg);
    } else if (o->name) {
        st = cn_model_create(m, &cfg);
    } else {
        cli_err(C, "name a MODEL file or an architecture with --model NAME");
        return EXIT_USAGE;
    }
    if (st != CN_OK) return cli_fail(C, st);
    if (!o->h) o->h = o->w = cn_model_default_size(*m);
    return EXIT_OK;
}

int cli_parse_model_command(const char *C, const char *help, const char *what,
                            cli_model_opts *o, int argc, char **argv,
                            int (*own)(const char *cmd, void *opts, int argc, char **argv, int *i),
                            void *opts) {
    for (int i = 1; i < argc; i++) {
        int r = own(C, opts, argc, argv, &i);
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        r = cli_model_opts_parse(C, help, o, argc, argv, &i);
        if (r == CLI_HELP) return EXIT_OK;
        if (r < 0) return EXIT_USAGE;
        if (!r) {
            cli_err(C, "unknown option '%s' (see convnet %s --help)", argv[i], C);
            return EXIT_USAGE;
        }
    }
    if (!o->path && !o->name) {
        cli_err(C, "name the MODEL file to %s", what);
        return EXIT_USAGE;
    }
    return -1;
}
