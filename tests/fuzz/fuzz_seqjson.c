/* Sequence inputs ({"examples", "labels"}, [P][D] or [B][P][D]) as `cache`, `grad` and
 * `eval --input` read them; D = 512 as in datasets/examples, and D = 3 for small inputs. */
#include "fuzz_common.h"

#include <cjson/cJSON.h>

#include "fewshot/seqio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    cJSON *root = cJSON_Parse(text);
    fs_error err;
    for (int d = 0; root && d < 2; d++) {
        fs_seq_batch b;
        if (fs_seq_batch_from_json(root, "fuzz", d ? 3 : 512, 5, &b, &err) == 0)
            fs_seq_batch_free(&b);
    }
    cJSON_Delete(root);
    free(text);
    return 0;
}
