/* thread_worker - syncs threads, thread relationships and thread content (INCLUDES) (see schemas/mapping.cfg). */
#include "worker.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, "thread",
                       "threads, thread relationships and thread content (INCLUDES)");
}
