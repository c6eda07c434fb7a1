/* Training checkpoints of the tiny model (tests/fuzz/seeds/checkpoint): tensors, Adam
 * moments and the step/iter/log-window metadata, checked against a train config. */
#include "fuzz_common.h"

#include "fewshot/model.h"
#include "train/optim.h"
#include "train/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fs_model m;
    static fs_optim_state s;
    static int ready;
    fs_error err;
    if (!ready) {
        fs_model_config cfg;
        fuzz_tiny_config(&cfg);
        if (fs_model_create(&m, &cfg, &err) || fs_optim_state_init(&s, &m, &err))
            abort();
        ready = 1;
    }
    fs_train_config t = {.train_iters = 64, .train_bs = 4, .log_every = 8};
    const char *path = fuzz_file("ckpt", data, size);
    fs_run_position pos;
    fs_checkpoint_read(path, &m, &s, &pos, &t, &err);
    unlink(path);
    return 0;
}
