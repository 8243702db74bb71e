/* tag_worker - syncs tags and content tags (see schemas/mapping.cfg). */
#include "worker.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, "tag",
                       "tags and content tags");
}
