/* A tiny program against the installed library (tests/test_install.sh builds it with
 * pkg-config): initialise the documented model, classify one sequence, print the query's
 * logits; check the header's version against the library's. */
#include <fewshot/api.h>
#include <fewshot/version.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    if (strcmp(fs_api_version(), FEWSHOT_VERSION) != 0) {
        fprintf(stderr, "header %s, library %s\n", FEWSHOT_VERSION, fs_api_version());
        return 1;
    }
    fs_error err = {{0}};
    fs_api_model *m;
    if (fs_api_model_init("{\"model\": {\"input_dim\": 4, \"num_classes\": 3}}", 7, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    float examples[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {1, 0, 0, 0.5f}};
    int32_t labels[3] = {2, 0, 2};
    float logits[3][3];
    if (fs_api_run(m, &examples[0][0], labels, 1, 3, NULL, NULL, NULL, 0, NULL, &logits[0][0], &err)) {
        fprintf(stderr, "%s\n", err.msg);
        fs_api_model_free(m);
        return 1;
    }
    printf("fewshot %s: query logits %.4f %.4f %.4f\n", fs_api_version(), logits[2][0], logits[2][1], logits[2][2]);
    /* errors come back as messages */
    labels[0] = 9;
    int bad = fs_api_run(m, &examples[0][0], labels, 1, 3, NULL, NULL, NULL, 0, NULL, &logits[0][0], &err);
    printf("bad label: %d, %s\n", bad, err.msg);
    fs_api_model_free(m);
    return bad == -1 ? 0 : 1;
}
