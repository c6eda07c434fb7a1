/* What is held on during a run, graft models included (interventions.h): the interp
 * layer parses the specs, this one (above io) reads the graft models' files. */
#ifndef FEWSHOT_TRAIN_HELD_OPEN_H
#define FEWSHOT_TRAIN_HELD_OPEN_H

#include "fewshot/interventions.h"

/* fs_held_load, then the models of graft_in / graft_out (their parameter file, their run
 * config if given, the interventions of its clamps section), each read once here for the
 * whole run. Errors name the intervention and the file. */
int fs_held_open(fs_held *h, const fs_held_source *src, const fs_model_config *cfg, int P, int nseq, fs_error *err);

#endif
